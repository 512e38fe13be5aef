"""Shared plumbing of the analysis tools: running statistics, JSON output, figures, layer lists.

Figures use a matplotlib ``Figure`` with its own Agg canvas (never pyplot's global
state) and are written as palette PNGs (≤ 256 colours), which keeps photo overlays small.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .metrics import StageSplit, stages_by_thirds

__all__ = [
    "RunningStats", "to_jsonable", "write_json", "new_figure", "save_figure", "shade_stages", "parse_layers",
    "default_layers", "image_on_grid", "STAGE_COLORS",
]

#: Stage 1, 2, 3 colours of the paper's Fig. 5 (blue, green, red).
STAGE_COLORS = ("#1f77b4", "#2ca02c", "#d62728")


class RunningStats:
    """Mean and standard deviation of fixed-shape samples, kept as running float64 sums.

    NaN entries of a sample are skipped for that entry only (each entry has its own count),
    so memory stays O(shape) however many samples are added.
    """

    def __init__(self, shape: Sequence[int] | int) -> None:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.sum = np.zeros(shape)
        self.sumsq = np.zeros(shape)
        self.count = np.zeros(shape, dtype=np.int64)

    def add(self, sample: np.ndarray | torch.Tensor | Sequence[float]) -> None:
        """Add one sample of the accumulator's shape."""
        x = sample.detach().double().cpu().numpy() if isinstance(sample, torch.Tensor) else np.asarray(sample, dtype=np.float64)
        if x.shape != self.sum.shape:
            raise ValueError(f"sample shape {x.shape} != {self.sum.shape}")
        ok = np.isfinite(x)
        self.sum += np.where(ok, x, 0.0)
        self.sumsq += np.where(ok, x * x, 0.0)
        self.count += ok

    def add_batch(self, samples: np.ndarray | torch.Tensor) -> None:
        """Add every sample along the first axis."""
        for s in samples:
            self.add(s)

    @property
    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum / np.maximum(self.count, 1), np.nan)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (0 for a single sample)."""
        n = np.maximum(self.count, 1)
        var = np.maximum(self.sumsq / n - (self.sum / n) ** 2, 0.0)
        return np.where(self.count > 0, np.sqrt(var), np.nan)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tensors, arrays, paths → plain JSON types; floats to 7 significant digits, NaN/±inf → null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return float(f"{v:.7g}") if math.isfinite(v) else None  # 7 significant digits (float32 precision)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write strict JSON (no NaN) with indentation; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_text(json.dumps(to_jsonable(obj), indent=1, allow_nan=False) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc
    return path


def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib Figure with its own Agg canvas (no pyplot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a core dependency
        raise ConfigError("figures need matplotlib: pip install matplotlib") from exc
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path, colors: int = 256) -> Path:
    """Render and save as a palette PNG (``colors`` colours, optimised)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    with Image.open(buf) as im:
        rgb = im.convert("RGB")
    try:
        rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc
    return path


def shade_stages(ax, stages: StageSplit | None, offset: float = 0.0, labels: bool = True) -> None:
    """Shade the three stages behind a per-layer plot whose x is ``block index + offset``."""
    if stages is None:
        return
    names = ("stage 1", "stage 2", "stage 3")
    for (start, stop), color, name in zip(stages.ranges(), STAGE_COLORS, names):
        ax.axvspan(start - 0.5 + offset, stop - 0.5 + offset, color=color, alpha=0.09, lw=0,
                   label=name if labels else None)


def parse_layers(text: str | None, num_layers: int, default: Sequence[int] | None = None) -> list[int]:
    """"0,5,11" (negative counts from the end) → sorted unique block indices; None/"auto" → ``default``."""
    if text is None or text.strip().lower() in ("", "auto"):
        return list(default if default is not None else default_layers(num_layers))
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--layers takes comma-separated block indices, e.g. 0,5,11; got {text!r}") from None
    out = []
    for v in values:
        idx = v + num_layers if v < 0 else v
        if not 0 <= idx < num_layers:
            raise ConfigError(f"layer {v} is out of range: the encoder has blocks 0..{num_layers - 1}")
        out.append(idx)
    if not out:
        raise ConfigError("--layers is empty")
    return sorted(set(out))


def default_layers(num_layers: int, stages: StageSplit | None = None) -> list[int]:
    """One layer per phase, like the paper's Fig. 4 (0, 5, 15, 22 of 24): first, mid stage 2, first of stage 3, last."""
    if num_layers < 3:
        return list(range(num_layers))
    s = stages or stages_by_thirds(num_layers)
    return sorted({0, (s.stage2_start + s.stage3_start - 1) // 2, s.stage3_start, num_layers - 1})


def image_on_grid(ax, image: np.ndarray, grid: tuple[int, int], alpha: float = 1.0,
                  shape: tuple[int, int] | None = None, interpolation: str = "bilinear") -> None:
    """Draw ``image`` (h, w, 3) so that data coordinates are patch units (x = col, y = row).

    The panel gets the aspect of ``shape`` (H, W) (default: the image's own), so grid-sized
    maps (e.g. a gh × gw PCA image) are shown at the photo's aspect.
    """
    gh, gw = grid
    H, W = shape if shape is not None else image.shape[:2]
    ax.imshow(image, extent=(0, gw, gh, 0), alpha=alpha, interpolation=interpolation)
    ax.set_xlim(0, gw)
    ax.set_ylim(gh, 0)
    ax.set_aspect((H / gh) / (W / gw))
    ax.set_xticks([])
    ax.set_yticks([])
