"""Decoding speed with the bounds-checked rANS decoder against CompressAI's native one, measured in one run.

For each photo and quality the same ``.cotam`` file is decoded twice per repetition, alternating the entropy
decoder (``codec/rans.py``, the default, and CompressAI's C++ ``RansDecoder``, patched in for the comparison
only); both must return identical pictures. Prints the median times of the whole decode and of entropy
decoding alone, and their ratios.

    python eval/bench_rans.py                                  # 4 Kodak photos, q0/q5/q9, shipped elic-small
    python eval/bench_rans.py --images ../shared/data/kodak --limit 24 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@contextmanager
def _native_decoding():
    """Route entropy decoding to CompressAI's native decoder (unsafe on untrusted input: benchmarks only)."""
    from compressai import ans

    from cotam_llava.codec import symbols

    safe = symbols.rans.decode_with_indexes
    native = ans.RansDecoder()
    symbols.rans.decode_with_indexes = native.decode_with_indexes
    try:
        yield
    finally:
        symbols.rans.decode_with_indexes = safe


@contextmanager
def _timed_entropy(totals: list[float]):
    from cotam_llava.codec import symbols

    inner = symbols.rans.decode_with_indexes

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[0] += time.perf_counter() - start

    symbols.rans.decode_with_indexes = timed
    try:
        yield
    finally:
        symbols.rans.decode_with_indexes = inner


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--qualities", default="0,5,9")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "elic-small"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)

    import torch

    from cotam_llava.codec import decode, encode
    from cotam_llava.codec.model import CoTAMELIC
    from cotam_llava.imageio import list_images

    if args.threads:
        torch.set_num_threads(args.threads)
    codec = CoTAMELIC.from_pretrained(args.checkpoint)
    files = list_images(args.images)[: args.limit]
    qualities = [int(q) for q in args.qualities.split(",")]
    decode(codec, encode(codec, files[0], qualities[0]))  # warm-up (numba's compiled code is cached)
    times: dict[str, list[float]] = {"safe": [], "native": []}
    entropy: dict[str, list[float]] = {"safe": [], "native": []}
    for path in files:
        for q in qualities:
            data = encode(codec, path, q)
            pictures = {}
            for _ in range(args.repeats):
                for kind in ("safe", "native"):
                    total = [0.0]
                    with (_native_decoding() if kind == "native" else nullcontext()), _timed_entropy(total):
                        start = time.perf_counter()
                        pictures[kind] = decode(codec, data)[0].x_hat
                        times[kind].append(time.perf_counter() - start)
                    entropy[kind].append(total[0])
            if not torch.equal(pictures["safe"], pictures["native"]):
                print(f"bench_rans: error: {path.name} q{q} decodes differently", file=sys.stderr)
                return 1
    med = {k: statistics.median(v) for k, v in times.items()}
    ent = {k: statistics.median(v) for k, v in entropy.items()}
    print(f"{len(files)} photos × qualities {qualities} × {args.repeats} repeats, {torch.get_num_threads()} threads")
    print("| decoder | decode s (median) | entropy decoding s (median) |\n|---|---:|---:|")
    for k in ("native", "safe"):
        print(f"| {k} | {med[k]:.3f} | {ent[k]:.4f} |")
    print(f"\nratio safe/native: decode {med['safe'] / med['native']:.3f}, entropy decoding {ent['safe'] / ent['native']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
