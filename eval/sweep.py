"""Sweep codecs × qualities × lmms-eval tasks → sweep.csv, a BD-rate table and RD plots (paper Fig. 7, Table 2).

One lmms-eval run per (codec, quality), all tasks at once, as a subprocess (``--model cotam_llava``); each run's
results JSON is read (scores and bpp — lmms-eval exits 0 even when a run fails, so its status is not trusted),
then ``cotam_llava.evaluation.task_sweep`` writes the tables and plots. Runs already done in ``--out`` are reused
(``--rerun`` to redo them).

    python eval/sweep.py --model DIR --codecs base,cotam,jpeg --qualities 1,3,5,7 --jpeg-qualities 10,30,50,70 \\
        --tasks cotam_mme,cotam_textvqa_val,cotam_mmbench_en --out out/sweep
    python eval/sweep.py --model DIR --codecs base,cotam --qualities 2,6 --tasks cotam_tiny --limit 2 --out /tmp/s

Writes ``OUT/sweep.csv`` (codec, quality, task, bpp, bits_per_frame, rate, score, metric, …), ``OUT/bdrate.csv``
and ``OUT/bdrate.md`` (every codec against ``--reference``: per task, the average curve, and the mean of the
per-task BD-rates), ``OUT/rd_<task>.png`` and ``OUT/rd_average.png``, and one folder per run (lmms-eval's
results and samples, ``lmms_eval.log``, ``bits.jsonl``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cotam_llava.errors import CoTAMError  # noqa: E402
from cotam_llava.evaluation.variants import LEARNED, VARIANTS  # noqa: E402  (light: no torch)

CODECS = (*LEARNED, "jpeg", "webp", "avif", "none")
CLASSICAL = ("jpeg", "webp", "avif")


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval/sweep.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, help="CoTAM model folder, or a stock host (with --cotam)")
    p.add_argument("--cotam", help="codec checkpoint folder, or hevc / av1 (with a stock host, or to replace the model's codec)")
    p.add_argument("--codecs", type=_names, default=["base", "cotam"],
                   help=f"comma-separated, from {', '.join(CODECS)} (cotam and cotam-noadapter need a model that names a "
                        "guidance ViT, or --guidance)")
    p.add_argument("--guidance", help="guidance ViT for the guided codecs (dinov2-imgfocus, a hub id or a folder)")
    p.add_argument("--qualities", type=_ints, default=[1, 3, 5, 7, 9], help="CoTAM quality levels (0-9) of the learned codecs")
    p.add_argument("--jpeg-qualities", type=_ints, default=[10, 30, 50, 70, 90], help="Pillow qualities for jpeg")
    p.add_argument("--webp-qualities", type=_ints, default=[10, 30, 50, 70, 90], help="Pillow qualities for webp")
    p.add_argument("--avif-qualities", type=_ints, default=[10, 30, 50, 70, 90], help="Pillow qualities for avif")
    p.add_argument("--tasks", type=_names, required=True, help="comma-separated lmms-eval tasks (e.g. cotam_mme)")
    p.add_argument("--limit", type=int, help="documents per task (lmms-eval --limit; for trials only)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--reference", default="base", help="anchor codec of the BD-rate table (default: base)")
    p.add_argument("--include-path", type=Path, default=None,
                   help="task YAML folder (default: the shipped tasks, eval/tasks or a wheel's copy: `cotam paths --tasks`)")
    p.add_argument("--batch-size", type=int, help="model_args batch_size")
    p.add_argument("--device", help="model_args device (cpu, cuda, cuda:1)")
    p.add_argument("--dtype", help="model_args dtype (float32, bfloat16, float16)")
    p.add_argument("--max-frames", type=int, help="model_args max_frames (video tasks)")
    p.add_argument("--rerun", action="store_true", help="redo runs whose results already exist in --out")
    return p


def runs_for(args: argparse.Namespace) -> list:
    from cotam_llava.evaluation.task_sweep import RunSpec

    runs = []
    for codec in args.codecs:
        if codec not in CODECS:
            raise CoTAMError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
        if codec == "none":
            runs.append(RunSpec(codec, None))
        elif codec in CLASSICAL:
            runs += [RunSpec(codec, q) for q in getattr(args, f"{codec}_qualities")]
        else:
            runs += [RunSpec(codec, q) for q in args.qualities]
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cotam_llava.evaluation import task_sweep as ts

    try:
        runs = runs_for(args)
        args.out.mkdir(parents=True, exist_ok=True)
        model_args = {k: v for k, v in {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
                                        "max_frames": args.max_frames}.items() if v is not None}
        points = []
        for i, spec in enumerate(runs, 1):
            print(f"[{i}/{len(runs)}] {spec.name}: lmms-eval on {', '.join(args.tasks)}", flush=True)
            guided = args.guidance and spec.codec in LEARNED and VARIANTS[spec.codec].guidance
            results = ts.run_lmms_eval(spec, args.model, args.tasks, args.out, cotam=args.cotam,
                                       include_path=args.include_path, limit=args.limit,
                                       model_args={**model_args, "guidance": args.guidance} if guided else model_args,
                                       rerun=args.rerun)
            got = ts.read_results(results, spec.codec, spec.quality)
            for p in got:
                print(f"    {p.task}: {p.metric} = {p.score:.4g} at {p.rate:.4g} {p.rate_unit}", flush=True)
            points += got
        csv_path = ts.write_csv(points, args.out / "sweep.csv")
        rows = ts.bd_table(points, args.reference)
        _, md = ts.write_bd_table(rows, args.out, args.reference)
        plots = ts.plot_rd(points, args.out, args.reference)
    except CoTAMError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 1
    print(md.read_text())
    print(f"wrote {csv_path}, {md}, {len(plots)} plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
