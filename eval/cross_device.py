"""Cross-device decoding of the learned codec, float against fixed-point entropy arithmetic, measured in one run.

Every photo × level is encoded here, once in each entropy arithmetic (``float``: CompressAI's float32 entropy
networks; ``fixed``: the exact fixed-point grid of ``cotam_llava/codec/exact.py``), decoded with the encoder's own
settings (timed), then decoded on each *other arithmetic* of ``--targets``:

- ``cpu-native``: the same CPU with oneDNN switched off, so every float32 convolution runs PyTorch's own im2col
  kernels, which add the products in another order (on a random 5×5×128 convolution 97 % of the outputs differ
  in their last bits): what another CPU kind or library build does to float entropy networks.
- ``cpu-1thread``: the same CPU on one thread.
- ``cuda``: the GPU (only where CUDA is present: encode on the CPU, decode on the GPU).

A decode is *exact* when its ŷ is bitwise the encoder's. Otherwise either the symbols are the encoder's (the
checksum matched) but ŷ = symbol + mean is off by the means' rounding error (*rounding*: a slightly different
picture, max |Δŷ| reported), or they are not (*mismatch*: the symbol checksum raised ``SymbolMismatchError``
before synthesis; without it the picture would be garbage). The table gives both per arithmetic and target, the bytes of
fixed against float (the rate cost of the grid) and the encode / decode times (ratio in this run).

    python eval/cross_device.py                                   # 24 Kodak photos × 10 levels, cpu-native (+ cuda)
    python eval/cross_device.py --limit 4 --qualities 0,5,9 --targets cpu-native,cpu-1thread
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGETS = ("cpu-native", "cpu-1thread", "cuda")
ARITHMETICS = ("float", "fixed")


@contextlib.contextmanager
def _on_target(target: str):
    import torch

    if target == "cpu-native":
        with torch.backends.mkldnn.flags(enabled=False):
            yield
    elif target == "cpu-1thread":
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    else:
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Writes cross_device.json and cross_device.md into --out.")
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "kodak"), help="folder of photos")
    parser.add_argument("--limit", type=int, default=0, help="first N photos only (0: all)")
    parser.add_argument("--qualities", default="0,1,2,3,4,5,6,7,8,9", help="comma-separated levels")
    parser.add_argument("--checkpoint", default=None, help="codec folder (default: the shipped codec)")
    parser.add_argument("--targets", default=None,
                        help=f"comma-separated, from {', '.join(TARGETS)} (default: cpu-native, plus cuda where present)")
    parser.add_argument("--out", default=None, help="folder for the results (default: print only)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    from cotam_llava.codec.loading import load_codec
    from cotam_llava.codec.pipeline import decode, encode_item, pack
    from cotam_llava.errors import CoTAMError, SymbolMismatchError
    from cotam_llava.imageio import list_images
    from cotam_llava.shipped import default_codec

    targets = args.targets.split(",") if args.targets else ["cpu-native"] + (["cuda"] if torch.cuda.is_available() else [])
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    if "cuda" in targets and not torch.cuda.is_available():
        parser.error("target cuda: no CUDA device here")
    try:
        qualities = [int(q) for q in args.qualities.split(",")]
        codec = load_codec(args.checkpoint or default_codec())
        files = list_images(args.images)
    except (ValueError, CoTAMError) as exc:
        parser.error(str(exc))
    files = files[: args.limit] if args.limit else files
    gpu_codec = copy.deepcopy(codec).to("cuda") if "cuda" in targets else None

    rows = []
    jobs = [(path, q, a) for path in files for q in qualities for a in ARITHMETICS]
    for path, q, arithmetic in tqdm(jobs, desc="cross-device", unit="item", disable=args.quiet):
        codec.set_entropy_arithmetic(arithmetic)
        start = time.perf_counter()
        encoded = encode_item(codec, path, q)
        data = pack(codec, [encoded.item])
        encode_s = time.perf_counter() - start
        reference = encoded.latent.y_hat
        start = time.perf_counter()
        same = decode(codec, data)[0]
        decode_s = time.perf_counter() - start
        row = {"image": path.name, "quality": q, "arithmetic": arithmetic, "bytes": len(data), "encode_s": encode_s,
               "decode_s": decode_s, "same_device_exact": bool(torch.equal(same.y_hat, reference))}
        for target in targets:
            model = gpu_codec if target == "cuda" else codec
            try:
                with _on_target(target):
                    got = decode(model, data)[0]
                delta = float((got.y_hat.cpu() - reference).abs().max())
                row[target] = "exact" if delta == 0 else "rounding"
                row[f"{target}_max_dy"] = delta
            except SymbolMismatchError:
                row[target] = "mismatch"
        rows.append(row)

    summary = {}
    for arithmetic in ARITHMETICS:
        sub = [r for r in rows if r["arithmetic"] == arithmetic]
        entry = {"items": len(sub), "bytes": sum(r["bytes"] for r in sub),
                 "encode_s_median": statistics.median(r["encode_s"] for r in sub),
                 "decode_s_median": statistics.median(r["decode_s"] for r in sub),
                 "same_device_exact": sum(r["same_device_exact"] for r in sub)}
        for target in targets:
            entry[target] = {k: sum(r[target] == k for r in sub) for k in ("exact", "rounding", "mismatch")}
            entry[target]["max_dy"] = max((r.get(f"{target}_max_dy", 0.0) for r in sub), default=0.0)
        summary[arithmetic] = entry
    fl, fx = summary["float"], summary["fixed"]
    lines = [f"{len(files)} photos × levels {qualities}, {args.images}, codec {codec.codec_id.hex()}, "
             f"{torch.get_num_threads()} threads", "",
             "| arithmetic | decoded on | items | exact ŷ | same symbols, ŷ off by rounding (max |Δŷ|) | "
             "symbol mismatch (refused) |", "|---|---|---:|---:|---:|---:|"]
    for arithmetic in ARITHMETICS:
        e = summary[arithmetic]
        lines.append(f"| {arithmetic} | the encoder's settings | {e['items']} | {e['same_device_exact']} | – | – |")
        for target in targets:
            t = e[target]
            lines.append(f"| {arithmetic} | {target} | {e['items']} | {t['exact']} | {t['rounding']} ({t['max_dy']:.2g}) | "
                         f"{t['mismatch']} |")
    lines += ["", "| | float | fixed | fixed / float |", "|---|---:|---:|---:|",
              f"| bytes, all items | {fl['bytes']} | {fx['bytes']} | {fx['bytes'] / fl['bytes']:.5f} |",
              f"| encode s (median) | {fl['encode_s_median']:.3f} | {fx['encode_s_median']:.3f} | "
              f"{fx['encode_s_median'] / fl['encode_s_median']:.3f} |",
              f"| decode s (median) | {fl['decode_s_median']:.3f} | {fx['decode_s_median']:.3f} | "
              f"{fx['decode_s_median'] / fl['decode_s_median']:.3f} |"]
    report = "\n".join(lines)
    print(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cross_device.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
        (out / "cross_device.md").write_text(report + "\n")
    fixed_failures = sum(fx[t]["mismatch"] + fx[t]["rounding"] for t in targets) + fx["items"] - fx["same_device_exact"]
    if fixed_failures:
        print(f"cross_device: error: {fixed_failures} fixed-point decodes were not exact", file=sys.stderr)
    return 1 if fixed_failures else 0


if __name__ == "__main__":
    sys.exit(main())
