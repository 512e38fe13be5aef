"""Per-level strength of a trained adapter, fitted on held-out photos (``cotam calibrate-adapter``).

A quality-conditioned adapter learns one correction for all ten levels. Where training was short, or the base's
near-lossless levels have token errors ~100× smaller than its lowest (x265: README, "CoTAM over hevc"), it can
gain at the low levels and lose a little at the top. Calibration measures, for each level on uniform real
bitstreams of held-out photos, the host encoder's final-token fidelity with the enhancement scaled by each factor
of a grid (0 = adapter off, 1 = as trained, > 1 = more of the learnt direction, opt-in), and keeps the best factor per level
in the adapter's ``level_scale`` (:class:`~cotam_llava.vision.adapter.LatentAdapterConfig`)::

    photo ─centre square─▶ picture ─edge, uniform level q─▶ .cotam ─tower, Δ × s─▶ tokens ─cosine vs stock─▶ table[q, s]
    level_scale[q] = argmax_s mean over photos of table[q, s]       (ties: the factor closest to 1)

Ten numbers fitted on a few dozen photos: choose them on photos the study will not report on (never Kodak).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..codec.configuration import CODEC_SUBFOLDER
from ..errors import ConfigError
from ..evaluation.proxies import token_fidelity
from ..imageio import ImageLike, to_pil
from ..vision.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_adapter_config
from ..vision.edge import EdgeEncoder, center_square
from ..vision.tower import CoTAMVisionTower

__all__ = ["DEFAULT_SCALES", "LevelCalibration", "calibrate_level_scale", "check_calibration_output",
           "write_calibrated_adapter"]

#: The factors tried per level: the adapter as trained, or less. Factors above 1 chosen on the 17 `choose` photos
#: (×2 at q0–q2 for the learned adapter) lost on the report photos (docs/training.md), so they are opt-in.
DEFAULT_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class LevelCalibration:
    """What :func:`calibrate_level_scale` measured.

    Attributes:
        scales: the factors tried.
        qualities: the levels measured (the others keep 1).
        cosine: (levels, factors) mean final-token cosine over the photos.
        mse: (levels, factors) mean final-token MSE.
        level_scale: the chosen factor of every level of the adapter (1 where not measured).
        images: how many photos.
        names: their names.
    """

    scales: tuple[float, ...]
    qualities: tuple[int, ...]
    cosine: np.ndarray
    mse: np.ndarray
    level_scale: tuple[float, ...]
    images: int
    names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"scales": list(self.scales), "qualities": list(self.qualities), "images": self.images,
                "names": self.names, "level_scale": list(self.level_scale),
                "cosine": self.cosine.round(6).tolist(), "mse": self.mse.round(6).tolist()}

    def markdown(self) -> str:
        """The table: per level, the mean cosine at each factor (the chosen one in bold) and its gain over ×1."""
        ones = self.scales.index(1.0) if 1.0 in self.scales else None
        head = "| level | " + " | ".join(f"×{s:g}" for s in self.scales) + " | chosen | Δcos vs ×1 |"
        lines = [head, "|---:|" + "---:|" * (len(self.scales) + 2)]
        for i, q in enumerate(self.qualities):
            best = self.scales.index(self.level_scale[q])
            cells = [f"**{c:.5f}**" if j == best else f"{c:.5f}" for j, c in enumerate(self.cosine[i])]
            gain = f"{self.cosine[i, best] - self.cosine[i, ones]:+.5f}" if ones is not None else "–"
            lines.append(f"| {q} | " + " | ".join(cells) + f" | ×{self.level_scale[q]:g} | {gain} |")
        return "\n".join(lines)


def _choose(row: np.ndarray, scales: Sequence[float]) -> float:
    """The factor with the highest mean cosine; among equals (to 1e-6), the one closest to 1 (as trained)."""
    top = row.max()
    tied = [s for s, c in zip(scales, row) if c >= top - 1e-6]
    return min(tied, key=lambda s: abs(s - 1.0))


def calibrate_level_scale(tower: CoTAMVisionTower, images: Sequence[ImageLike],
                          scales: Sequence[float] = DEFAULT_SCALES, qualities: Sequence[int] | None = None,
                          names: Sequence[str] | None = None, progress: bool = False) -> LevelCalibration:
    """Measure and choose the adapter's per-level factor on ``images`` (see the module docstring).

    The tower's adapter must be quality-conditioned; any ``level_scale`` it already has is ignored while measuring
    (every factor multiplies the adapter as trained) and left as it was afterwards.
    """
    config = tower.adapter.config
    n = config.num_qualities
    if not n:
        raise ConfigError("this adapter has no quality conditioning: a per-level factor needs the levels")
    scales = tuple(float(s) for s in scales)
    if not scales or any(not 0.0 <= s <= 8.0 for s in scales):
        raise ConfigError(f"factors must be in [0, 8], got {list(scales)}")
    qualities = tuple(range(n)) if qualities is None else tuple(int(q) for q in qualities)
    if not qualities or any(not 0 <= q < n for q in qualities):
        raise ConfigError(f"levels must be in 0..{n - 1}, got {list(qualities)}")
    if not images:
        raise ConfigError("calibration needs at least one photo")
    edge = EdgeEncoder(tower.codec, tower.cotam_config, use_guidance=False)
    processor = tower.image_processor
    cosine = np.zeros((len(qualities), len(scales)))
    mse = np.zeros_like(cosine)
    saved = config.level_scale
    try:
        with torch.no_grad(), tower.variant(adapter=True):
            for i, image in enumerate(tqdm(images, desc="calibrate adapter", unit="image", disable=not progress)):
                picture = center_square(to_pil(image))
                pv = processor(images=[picture], return_tensors="pt")["pixel_values"].to(tower.device)
                reference = tower.encoder(pixel_values=pv).last_hidden_state
                for a, q in enumerate(qualities):
                    decoded = [item for items in tower.decode(edge.encode_image(picture, q)) for item in items]
                    inputs = tower.host_inputs(decoded, anyres=False)  # decoded once, then every factor
                    for b, s in enumerate(scales):
                        config.level_scale = (s,) * n
                        with tower.attached_latents(inputs.latents):
                            tokens = tower(inputs.pixel_values).last_hidden_state
                        cos, err = token_fidelity(reference, tokens)
                        cosine[a, b] += float(cos.mean())
                        mse[a, b] += float(err.mean())
    finally:
        config.level_scale = saved
    cosine /= len(images)
    mse /= len(images)
    chosen = [1.0] * n
    for a, q in enumerate(qualities):
        chosen[q] = _choose(cosine[a], scales)
    listed = list(names) if names is not None else [Path(im).name if isinstance(im, (str, Path)) else str(k)
                                                    for k, im in enumerate(images)]
    return LevelCalibration(scales, qualities, cosine, mse, tuple(chosen), len(images), listed)


def check_calibration_output(source: str | Path, out: str | Path) -> None:
    """ConfigError unless ``out`` is a new (or empty) folder other than the adapter ``source``."""
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise ConfigError("write the calibrated adapter to a new folder (--out), not over its source")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder")


def write_calibrated_adapter(source: str | Path, out: str | Path, calibration: LevelCalibration,
                             images_from: str = "") -> Path:
    """Copy the exported adapter ``source`` (weights, config, a fine-tuned ``codec/``) to ``out`` with
    ``tower.adapter.level_scale`` set, plus ``calibration.json`` / ``calibration.md`` (what was measured)."""
    source, out = Path(source), Path(out)
    info = read_adapter_config(source)
    check_calibration_output(source, out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / ADAPTER_WEIGHTS, out / ADAPTER_WEIGHTS)
    if (source / CODEC_SUBFOLDER).is_dir():
        shutil.copytree(source / CODEC_SUBFOLDER, out / CODEC_SUBFOLDER)
    info["tower"]["adapter"]["level_scale"] = list(calibration.level_scale)
    info["calibration"] = {"from": str(source), "images": calibration.images, "images_from": images_from,
                           "scales": list(calibration.scales), "qualities": list(calibration.qualities)}
    (out / ADAPTER_CONFIG).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    (out / "calibration.json").write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")
    (out / "calibration.md").write_text(
        f"# Per-level adapter strength: {source}\n\n{calibration.images} photos from {images_from or 'the given list'}; "
        f"uniform real bitstreams at each level; mean final-token cosine with the enhancement × each factor "
        f"(×0 = adapter off, ×1 = as trained).\n\n{calibration.markdown()}\n")
    return out
