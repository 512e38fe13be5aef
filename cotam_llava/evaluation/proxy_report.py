"""Reports of the offline proxies: BD-rates, Markdown tables, CSV/JSON files and RD plots.

Input: the per-image rows and the per-point :class:`~cotam_llava.evaluation.proxies.ProxyPoint` s
of :mod:`cotam_llava.evaluation.proxies`. BD-rates use :func:`cotam_llava.evaluation.bdrate.bd_rate`
(the ``bjontegaard`` package, pchip, Pareto fronts for non-monotone curves): percent bits a
codec needs for the same proxy score as the anchor (negative = it saves bits). Every metric
given must grow with quality (cosine, −10·log10 MSE, character accuracy), never MSE itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from .bdrate import BDResult
from .proxies import ORIGINAL, ProxyPoint
from .rd import Curve, bd_against, curves, write_csv

__all__ = ["bd_tables", "points_table", "bd_markdown", "plot_rd", "write_report"]


def _curves(points: Sequence[ProxyPoint], metric: str) -> dict[str, Curve]:
    return curves(points, "value", where=lambda p: p.metric == metric and p.codec != ORIGINAL)


def bd_tables(
    points: Sequence[ProxyPoint], metrics: Sequence[str], anchors: Sequence[str] = ("base", "jpeg")
) -> dict[str, dict[str, dict[str, BDResult]]]:
    """BD-rate of every codec against every anchor present, for each metric.

    Returns:
        ``{metric: {anchor: {codec: BDResult}}}``; an anchor absent from the points is left out.
    """
    out: dict[str, dict[str, dict[str, BDResult]]] = {}
    for metric in metrics:
        by_codec = _curves(points, metric)
        out[metric] = {anchor: bd_against(by_codec, anchor) for anchor in anchors if anchor in by_codec}
    return out


def _fmt(value: float, spec: str) -> str:
    return "–" if value != value else format(value, spec)


def points_table(points: Sequence[ProxyPoint], metrics: Sequence[str], specs: dict[str, str] | None = None) -> str:
    """Markdown table, one row per (codec, quality), one column per metric."""
    specs = specs or {}
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for p in points:
        row = rows.setdefault((p.codec, p.quality), {"images": p.images, "bpp": p.bpp})
        row[p.metric] = p.value
    lines = [
        "| codec | quality | images | bpp | " + " | ".join(metrics) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(metrics),
    ]
    order = lambda k: (k[0] != ORIGINAL, k[0], k[1])  # noqa: E731
    for (codec, quality) in sorted(rows, key=order):
        row = rows[(codec, quality)]
        vals = " | ".join(_fmt(row.get(m, math.nan), specs.get(m, ".4f")) for m in metrics)
        q = "–" if codec == ORIGINAL else str(quality)
        lines.append(f"| {codec} | {q} | {row['images']} | {row['bpp']:.4f} | {vals} |")
    return "\n".join(lines)


def bd_markdown(bd: dict[str, dict[str, dict[str, BDResult]]]) -> str:
    """Markdown table of BD-rates: one row per (anchor, codec), one column per metric, notes last."""
    metrics = list(bd)
    pairs: list[tuple[str, str]] = []
    for metric in metrics:
        for anchor, table in bd[metric].items():
            pairs += [(anchor, c) for c in table if (anchor, c) not in pairs]
    if not pairs:
        return "(no BD-rate: the anchors base/jpeg are not among the codecs)"
    lines = [
        "| anchor | codec | " + " | ".join(f"BD-rate % ({m})" for m in metrics) + " | notes |",
        "|---|---|" + "---:|" * len(metrics) + "---|",
    ]
    for anchor, codec in pairs:
        vals, notes = [], []
        for m in metrics:
            res = bd[m].get(anchor, {}).get(codec)
            vals.append("–" if res is None else _fmt(res.value, "+.1f"))
            if res is not None and res.note:
                notes.append(f"{m}: {_short_note(res.note)}")
        lines.append(f"| {anchor} | {codec} | " + " | ".join(vals) + f" | {'; '.join(notes)} |")
    return "\n".join(lines)


_SHORT_NOTES = (
    (" dominated point(s) dropped", " dominated"),
    ("quality ranges do not overlap", "no overlap"),
    ("fewer than 2 usable points", "< 2 points"),
    ("% quality overlap", "% overlap"),
)


def _short_note(note: str) -> str:
    """A BD-rate note shortened for the Markdown table (the CSV keeps the full one)."""
    for long, short in _SHORT_NOTES:
        note = note.replace(long, short)
    return note


def plot_rd(
    points: Sequence[ProxyPoint], metrics: Sequence[str], path: Path, title: str = "",
    labels: dict[str, str] | None = None,
) -> Path:
    """One panel per metric (value vs bpp), one line per codec; the uncompressed value as a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = labels or {}
    cols = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.8 * rows), dpi=110)
    FigureCanvasAgg(fig)
    codecs = sorted({p.codec for p in points if p.codec != ORIGINAL})
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        for codec in codecs:
            pts = sorted((p.bpp, p.value) for p in points if p.codec == codec and p.metric == metric)
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", ms=3.5, label=codec)
        ceiling = [p.value for p in points if p.codec == ORIGINAL and p.metric == metric]
        if ceiling:
            ax.axhline(ceiling[0], color="0.4", ls="--", lw=1, label="uncompressed")
        ax.set_xlabel("bpp (real files)")
        ax.set_ylabel(labels.get(metric, metric))
        ax.set_title(labels.get(metric, metric), fontsize=9)
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_report(
    name: str,
    rows: Sequence[Any],
    points: Sequence[ProxyPoint],
    bd: dict[str, dict[str, dict[str, BDResult]]],
    out_dir: Path,
    *,
    table_metrics: Sequence[str],
    plot_metrics: Sequence[str],
    title: str,
    notes: Sequence[str] = (),
    meta: dict[str, Any] | None = None,
    specs: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write ``<name>_images.csv``, ``<name>_points.csv``, ``<name>_bdrate.csv``, ``<name>.md``,
    ``<name>.json`` and ``<name>_rd.png`` under ``out_dir``; returns their paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "images": out_dir / f"{name}_images.csv",
        "points": out_dir / f"{name}_points.csv",
        "bdrate": out_dir / f"{name}_bdrate.csv",
        "report": out_dir / f"{name}.md",
        "json": out_dir / f"{name}.json",
        "plot": out_dir / f"{name}_rd.png",
    }
    write_csv(paths["images"], [asdict(r) for r in rows])
    write_csv(paths["points"], [asdict(p) for p in points])
    bd_records = [
        {"metric": m, "anchor": a, "codec": c, "bd_rate_pct": r.value, "note": r.note}
        for m, per_anchor in bd.items() for a, table in per_anchor.items() for c, r in table.items()
    ]
    write_csv(paths["bdrate"], bd_records)
    md = [f"# {title}", ""] + [f"- {n}" for n in notes] + [
        "", points_table(points, table_metrics, specs), "",
        "BD-rate (pchip; % bits for the same proxy score, negative = fewer bits than the anchor; '–' = undefined, "
        "the note says why; dominated points are dropped first, see `cotam_llava/evaluation/bdrate.py`):", "",
        bd_markdown(bd), "",
    ]
    paths["report"].write_text("\n".join(md))
    payload = {
        "title": title, "notes": list(notes), **(meta or {}),
        "points": [asdict(p) for p in points],
        "bdrate": [{**r, "bd_rate_pct": None if r["bd_rate_pct"] != r["bd_rate_pct"] else r["bd_rate_pct"]}
                   for r in bd_records],
    }
    paths["json"].write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    plot_rd(points, plot_metrics, paths["plot"], title, labels)
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
