"""Fuzz the cloud decoder with crafted ``.cotam`` streams whose CRCs are all valid (see ``cotam_llava.evaluation.fuzz``).

Each case is decoded in an isolated worker process, so crashes and hangs are counted, not fatal. Prints a table of
outcomes per crafter (decoded, our own clean errors, crashes, hangs, other exceptions, worst decode time) and the
workers' peak memory; ``--out`` also writes it as JSON and keeps every failing case as a ``.cotam`` file.

    python eval/fuzz_decoder.py --cases 2000                              # the tiny codec (fast: volume)
    python eval/fuzz_decoder.py --cases 100000 --out eval/results/fuzz    # the long run (< 1 h on 2 cores)
    python eval/fuzz_decoder.py --checkpoint checkpoints/elic-small --cases 2000

Exit status 1 when any case crashed, hung or raised an exception that is not a ``BitstreamError``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--checkpoint", help="codec checkpoint to decode with (default: a fixed-seed tiny codec, "
                                             "built in a temporary folder)")
    parser.add_argument("--cases", type=int, default=2000, help="crafted streams (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crafters")
    parser.add_argument("--batch", type=int, default=200, help="cases per worker call (default 200)")
    parser.add_argument("--batch-timeout", type=float, default=600.0, help="seconds before a batch counts as hung")
    parser.add_argument("--workers", type=int, default=1, help="decoding worker processes (default 1; one per core: "
                                                              "2 on this machine for 100 000 cases in under an hour)")
    parser.add_argument("--out", help="folder for fuzz.json and the failing cases")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.batch < 1 or args.batch_timeout <= 0 or args.workers < 1:
        parser.error("--cases, --batch, --batch-timeout and --workers must be positive")

    from tqdm.auto import tqdm

    from cotam_llava.codec.model import CoTAMELIC
    from cotam_llava.evaluation.fuzz import craft_cases, reference_streams, run_fuzz
    from cotam_llava.errors import CoTAMError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.checkpoint:
                checkpoint = args.checkpoint
                codec = CoTAMELIC.from_pretrained(checkpoint)
            else:
                codec = CoTAMELIC.from_preset("tiny", seed=0).eval()
                codec.finalize()
                checkpoint = codec.save_pretrained(Path(tmp) / "tiny")
        except CoTAMError as exc:
            print(f"fuzz_decoder: error: {exc}", file=sys.stderr)
            return 1
        references = reference_streams(codec)
        with tqdm(total=args.cases, desc="fuzz", unit="case") as bar:
            report = run_fuzz(checkpoint, craft_cases(references, args.cases, args.seed), batch=args.batch,
                              batch_timeout=args.batch_timeout, progress=bar.update, workers=args.workers)

    print(report.table())
    print(f"\n{report.cases} cases in {report.seconds:.0f} s ({report.cases / max(report.seconds, 1e-9):.0f}/s); "
          f"worker peak RSS {report.peak_rss / 2**20:.0f} MiB; crashes, hangs and foreign exceptions: {report.bad}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fuzz.json").write_text(json.dumps({
            "checkpoint": str(args.checkpoint or "tiny (seed 0)"), "cases": report.cases, "seed": args.seed, "workers": args.workers,
            "seconds": round(report.seconds, 1), "peak_rss_bytes": report.peak_rss, "bad": report.bad,
            "outcomes": {k: dict(v) for k, v in report.outcomes.items()},
            "worst_seconds": {k: round(v, 4) for k, v in report.worst_seconds.items()},
        }, indent=1) + "\n")
        (out / "fuzz.md").write_text(report.table() + "\n")
        for i, (name, outcome, data) in enumerate(report.failures):
            (out / f"failure_{i:04d}_{name}_{outcome.split(':')[0]}.cotam").write_bytes(data)
    return 1 if report.bad else 0


if __name__ == "__main__":
    sys.exit(main())
