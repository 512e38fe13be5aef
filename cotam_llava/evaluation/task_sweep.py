"""MLLM task score against rate over codecs × qualities × tasks (paper Fig. 7 and Table 2), from lmms-eval runs.

::

    for each (codec, quality):  lmms-eval --model cotam_llava --model_args ...,codec=C,quality=Q --tasks T1,T2 …
                                (a subprocess; its results JSON is read, never its exit status: lmms-eval 0.7.3
                                 exits 0 even when a run fails)
        results JSON ─per task: score (metadata "cotam_score", else the first higher-is-better metric),
                      rate ("bpp"; "bits_per_frame" for video tasks: metadata "cotam_rate")─▶ SweepPoint
    points ─▶ sweep.csv (codec, quality, task, bpp, bits_per_frame, rate, score, …)
           ─▶ BD-rate of every codec against the reference codec, per task, their mean (Table 2's number)
              and on the average curve (pchip, Pareto fronts: bdrate.py) ─▶ bdrate.csv, bdrate.md
           ─▶ rd_<task>.png per task and rd_average.png (mean relative score vs mean bpp)

The average curve averages *relative* scores (each task's score divided by its uncompressed ``none`` run when
the sweep has one, else by its best score in the sweep), because task scores live on different scales
(MME ≈ 1500, accuracies in [0, 1] or [0, 100]); its rate is the mean bpp of the image tasks.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import ConfigError, CoTAMError
from .bdrate import bd_quality, bd_rate
from .rd import curves

__all__ = [
    "SweepPoint",
    "RunSpec",
    "read_results",
    "results_files",
    "run_lmms_eval",
    "write_csv",
    "read_csv",
    "bd_table",
    "write_bd_table",
    "plot_rd",
    "average_curve",
]

RATE_METRICS = ("bpp", "bits_per_frame")
CLASSICAL = ("jpeg", "webp", "avif")
AVERAGE = "average"


@dataclass
class SweepPoint:
    """One task's outcome in one (codec, quality) run.

    Attributes:
        codec, quality: the run (quality None for ``none``).
        task: lmms-eval task name.
        score, metric: the task's headline score and its metric name.
        bpp: mean bits per pixel of the task's requests (for videos: per pixel of the coded frames).
        bits_per_frame: mean bits per frame (video tasks), else None.
        rate_unit: "bpp" or "bits_per_frame" — the task's rate axis.
        samples: documents scored.
        results: the results JSON read.
    """

    codec: str
    quality: int | None
    task: str
    score: float
    metric: str
    bpp: float | None
    bits_per_frame: float | None = None
    rate_unit: str = "bpp"
    samples: int | None = None
    results: str = ""

    @property
    def rate(self) -> float | None:
        return self.bits_per_frame if self.rate_unit == "bits_per_frame" else self.bpp


@dataclass
class RunSpec:
    """One lmms-eval run of the sweep."""

    codec: str
    quality: int | None

    @property
    def name(self) -> str:
        return self.codec if self.quality is None else f"{self.codec}_q{self.quality}"


# --------------------------------------------------------------------------- reading results
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def read_results(path: str | os.PathLike, codec: str, quality: int | None) -> list[SweepPoint]:
    """The per-task points of one lmms-eval results JSON (``<output>/<model>/<date>_results.json``).

    Raises:
        CoTAMError: the file has no results, or a task has no score or no rate.
    """
    path = Path(path)
    data = json.loads(path.read_text())
    results = data.get("results") or {}
    if not results:
        raise CoTAMError(f"{path}: no task results")
    configs = data.get("configs") or {}
    better = data.get("higher_is_better") or {}
    throughput = data.get("throughput") or {}
    points = []
    for task, values in sorted(results.items()):
        meta = (configs.get(task) or {}).get("metadata") or {}
        meta = meta if isinstance(meta, dict) else {}
        metric = meta.get("cotam_score")
        if metric is None:  # stock tasks: the first higher-is-better metric that has a value
            metric = next((m for m, h in (better.get(task) or {}).items()
                           if h and m not in RATE_METRICS and _number(values.get(f"{m},none")) is not None), None)
        score = _number(values.get(f"{metric},none")) if metric else None
        if score is None:
            raise CoTAMError(f"{path}: task {task} has no score ({metric or 'no higher-is-better metric'})")
        bpp = _number(values.get("bpp,none"))
        bpf = _number(values.get("bits_per_frame,none"))
        if bpp is None:  # a task without the rate metric: the model's own per-task figure (results["throughput"])
            bpp = _number(throughput.get(f"avg_cotam_bpp/{task}"))
        if bpf is None:
            bpf = _number(throughput.get(f"avg_cotam_bits_per_frame/{task}"))
        unit = meta.get("cotam_rate") or ("bits_per_frame" if bpf is not None and bpp is None else "bpp")
        point = SweepPoint(codec, quality, task, score, metric, bpp, bpf, unit,
                           (data.get("n-samples") or {}).get(task, {}).get("effective"), str(path))
        if point.rate is None:
            raise CoTAMError(f"{path}: task {task} has no {unit} (was the run made with --model cotam_llava?)")
        points.append(point)
    return points


def results_files(folder: str | os.PathLike) -> list[Path]:
    """lmms-eval results files under an ``--output_path`` (``<model>/<date>_results.json``), oldest first.

    Tasks may write their own ``*_results.json`` under ``submissions/`` (MMBench does): those are skipped.
    """
    files = [p for p in Path(folder).glob("*/*_results.json") if p.parent.name != "submissions"]
    return sorted(files, key=lambda p: p.stat().st_mtime)


def run_lmms_eval(
    spec: RunSpec,
    model: str,
    tasks: Sequence[str],
    out_dir: str | os.PathLike,
    cotam: str | None = None,
    include_path: str | os.PathLike | None = None,
    limit: int | None = None,
    model_args: dict[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    rerun: bool = False,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Path:
    """Run lmms-eval once for ``spec`` in ``out_dir/<codec>_q<quality>/``; returns its results JSON.

    An existing results file is reused unless ``rerun``. The run's log goes to ``lmms_eval.log`` there and its
    per-request bits to ``bits.jsonl`` (``$COTAM_BITS_LOG``).

    Raises:
        CoTAMError: no results file was written (the message ends with the log's last lines).
    """
    run_dir = Path(out_dir) / spec.name
    if not rerun and results_files(run_dir):
        return results_files(run_dir)[-1]
    run_dir.mkdir(parents=True, exist_ok=True)
    args = {"pretrained": model, "codec": spec.codec, **(model_args or {})}
    if cotam:
        args["cotam"] = cotam
    if spec.quality is not None:
        args["quality"] = spec.quality
    for key, value in args.items():
        if "," in str(value) or "=" in str(value):
            raise ConfigError(f"model_args value {key}={value!r} cannot contain ',' or '='")
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "cotam_llava",
           "--model_args", ",".join(f"{k}={v}" for k, v in args.items()),
           "--tasks", ",".join(tasks), "--output_path", str(run_dir), "--log_samples"]
    if include_path is None:
        from ..shipped import tasks_dir

        include_path = tasks_dir()
    if include_path is not None:
        cmd += ["--include_path", str(include_path)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    cmd += list(extra_args)
    bits_log = run_dir / "bits.jsonl"
    bits_log.unlink(missing_ok=True)
    run_env = {**os.environ, **(env or {}), "COTAM_BITS_LOG": str(bits_log)}
    log = run_dir / "lmms_eval.log"
    before = set(results_files(run_dir))
    with open(log, "w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=run_env, timeout=timeout, check=False)
    new = [p for p in results_files(run_dir) if p not in before]
    if not new:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise CoTAMError(f"lmms-eval wrote no results for {spec.name} (log: {log}):\n{tail}")
    return new[-1]


# --------------------------------------------------------------------------- CSV
CSV_FIELDS = ["codec", "quality", "task", "bpp", "bits_per_frame", "rate", "rate_unit", "score", "metric", "samples",
              "results"]


def write_csv(points: Iterable[SweepPoint], path: str | os.PathLike) -> Path:
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for p in points:
            row = asdict(p)
            row["rate"] = p.rate
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    return path


def read_csv(path: str | os.PathLike) -> list[SweepPoint]:
    def num(v: str) -> float | None:
        return None if v == "" else float(v)

    points = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            points.append(SweepPoint(
                codec=row["codec"], quality=None if row["quality"] == "" else int(row["quality"]), task=row["task"],
                score=float(row["score"]), metric=row["metric"], bpp=num(row["bpp"]),
                bits_per_frame=num(row["bits_per_frame"]), rate_unit=row["rate_unit"],
                samples=None if row["samples"] == "" else int(float(row["samples"])), results=row["results"]))
    return points


# --------------------------------------------------------------------------- curves and BD-rate
def _points_by_task(points: Sequence[SweepPoint]) -> dict[str, dict[str, list[SweepPoint]]]:
    """task → codec → points sorted by rate, for the plots (``none`` kept separately by callers)."""
    out: dict[str, dict[str, list[SweepPoint]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        out[p.task][p.codec].append(p)
    for by_codec in out.values():
        for pts in by_codec.values():
            pts.sort(key=lambda p: (p.rate if p.rate is not None else math.inf))
    return out


def average_curve(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """One point per (codec, quality) present in every image task: mean relative score vs mean bpp.

    Relative score = score / the task's ``none`` score (or its best score in the sweep when there is no ``none``
    run, or 1 when that is 0), in percent.
    """
    tasks = sorted({p.task for p in points if p.rate_unit == "bpp"})
    if not tasks:
        return []
    norm = {}
    for t in tasks:
        ref = [p.score for p in points if p.task == t and p.codec == "none"]
        best = max((p.score for p in points if p.task == t), default=0.0)
        norm[t] = ref[0] if ref and ref[0] > 0 else (best if best > 0 else 1.0)
    runs: dict[tuple[str, int | None], dict[str, SweepPoint]] = defaultdict(dict)
    for p in points:
        if p.task in norm:
            runs[(p.codec, p.quality)][p.task] = p
    out = []
    for (codec, quality), by_task in runs.items():
        if set(by_task) != set(tasks) or any(p.bpp is None for p in by_task.values()):
            continue
        score = float(np.mean([100.0 * by_task[t].score / norm[t] for t in tasks]))
        bpp = float(np.mean([by_task[t].bpp for t in tasks]))
        out.append(SweepPoint(codec, quality, AVERAGE, score, "relative score (%)", bpp, None, "bpp",
                              sum(p.samples or 0 for p in by_task.values()) or None))
    return sorted(out, key=lambda p: (p.codec, p.bpp))


@dataclass
class BDRow:
    """BD figures of one codec against the reference, for one task (or the average curve)."""

    codec: str
    task: str
    bd_rate: float
    bd_score: float
    note: str = ""


def bd_table(points: Sequence[SweepPoint], reference: str = "base") -> list[BDRow]:
    """BD-rate (%) and BD-score of every codec but the reference (and ``none``), per task, for the average curve,
    and the mean of the per-task BD-rates (task ``mean``; NaN unless every task's BD-rate is defined)."""
    rows: list[BDRow] = []
    all_points = list(points) + average_curve(points)
    by_task = {task: curves(all_points, "score", rate="rate", where=lambda p, t=task: p.task == t)
               for task in sorted({p.task for p in all_points})}
    codecs = sorted({p.codec for p in points} - {reference, "none"})
    tasks = sorted(t for t in by_task if t != AVERAGE)
    for codec in codecs:
        per_task = []
        for task in tasks + ([AVERAGE] if AVERAGE in by_task else []):
            ref, test = by_task[task].get(reference), by_task[task].get(codec)
            if not ref or not test:
                rows.append(BDRow(codec, task, math.nan, math.nan, f"no {reference if not ref else codec} points"))
                continue
            args = (*ref, *test)
            r, s = bd_rate(*args), bd_quality(*args)
            rows.append(BDRow(codec, task, r.value, s.value, "; ".join(n for n in dict.fromkeys([r.note, s.note]) if n)))
            if task != AVERAGE:
                per_task.append(r.value)
        mean = float(np.mean(per_task)) if per_task and all(math.isfinite(v) for v in per_task) else math.nan
        rows.append(BDRow(codec, "mean", mean, math.nan,
                          "mean of the per-task BD-rates" + ("" if math.isfinite(mean) else " (some undefined)")))
    return rows


def _fmt(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:+.{digits}f}"


def write_bd_table(rows: Sequence[BDRow], out_dir: str | os.PathLike, reference: str) -> tuple[Path, Path]:
    """``bdrate.csv`` (one row per codec and task) and ``bdrate.md`` (codecs × tasks, BD-rate %)."""
    out = Path(out_dir)
    csv_path, md_path = out / "bdrate.csv", out / "bdrate.md"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["codec", "reference", "task", "bd_rate_percent", "bd_score", "note"])
        for r in rows:
            writer.writerow([r.codec, reference, r.task, r.bd_rate, r.bd_score, r.note])
    tasks = list(dict.fromkeys(r.task for r in rows))
    codecs = list(dict.fromkeys(r.codec for r in rows))
    cell = {(r.codec, r.task): r for r in rows}
    lines = [f"BD-rate (%) against `{reference}` at equal task score (Bjøntegaard, pchip over the Pareto front; "
             "negative = fewer bits). `average`: the mean-relative-score curve; `mean`: mean of the per-task values.",
             "", "| codec | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for codec in codecs:
        lines.append(f"| {codec} | " + " | ".join(_fmt(cell[(codec, t)].bd_rate) if (codec, t) in cell else ""
                                                  for t in tasks) + " |")
    notes = [f"- {r.codec} / {r.task}: {r.note}" for r in rows if r.note and r.task != "mean"]
    if notes:
        lines += ["", "Notes:", *notes]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


# --------------------------------------------------------------------------- plots
def plot_rd(points: Sequence[SweepPoint], out_dir: str | os.PathLike, reference: str = "base") -> list[Path]:
    """One RD plot per task (score vs its rate) and one for the average curve; ``none`` is a dashed line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    by_task = _points_by_task(list(points) + average_curve(points))
    paths = []
    for task in sorted(by_task, key=lambda t: (t == AVERAGE, t)):
        fig, ax = plt.subplots(figsize=(4.8, 3.6), dpi=120)
        unit = "bits_per_frame"
        for codec, pts in sorted(by_task[task].items(), key=lambda kv: (kv[0] != reference, kv[0])):
            unit = pts[0].rate_unit
            if codec == "none":
                ax.axhline(pts[0].score, color="grey", linestyle="--", linewidth=1, label="none (uncompressed)")
                continue
            ax.plot([p.rate for p in pts], [p.score for p in pts], marker="o", markersize=3,
                    linewidth=2 if codec.startswith("cotam") else 1.2, label=codec)
        ax.set_xlabel("bits per frame" if unit == "bits_per_frame" else "bpp")
        any_pt = next(iter(by_task[task].values()))[0]
        ax.set_ylabel(any_pt.metric)
        ax.set_title("average over tasks" if task == AVERAGE else task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"rd_{task}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
