"""Steps per second of `cotam train-codec` on this machine: eager against `--compile`, measured in one run.

One training step as the trainer runs it (forward with a random quality map per sample, the RD loss, backward,
Adam; the entropy bottleneck's aux step left out, it is the same in every variant) on random crops, each variant
timed in turn for ``--repeats`` rounds so that a load on the machine hits all of them alike; medians and their
ratio to eager are printed as a table.

    python eval/bench_train_step.py                      # 256² × 8, the recipe's crops, 2 threads
    python eval/bench_train_step.py --full-forward       # also the whole forward compiled (compiles for minutes)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotam_llava.codec.model import CoTAMELIC  # noqa: E402
from cotam_llava.shipped import default_codec  # noqa: E402
from cotam_llava.training.codec_trainer import compile_transforms, using_transforms  # noqa: E402
from cotam_llava.training.losses import rate_distortion_loss  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="codec folder (default: the shipped elic-small)")
    parser.add_argument("--crop", type=int, default=256, help="crop side (multiple of 64)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per variant (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-forward", action="store_true", help="also time torch.compile of the whole forward")
    args = parser.parse_args(argv)
    if args.crop <= 0 or args.crop % 64 or args.batch < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--crop must be a positive multiple of 64; --batch, --repeats and --threads at least 1")
    checkpoint = args.checkpoint or default_codec()
    if checkpoint is None:
        parser.error("no shipped codec in this install: pass --checkpoint DIR")
    torch.set_num_threads(args.threads)
    model = CoTAMELIC.from_pretrained(checkpoint).train()
    lambdas = torch.tensor([model.config.lambda_for_quality(q) for q in range(model.config.num_qualities)])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.crop, args.crop, generator=gen)
    qmap = torch.randint(0, model.config.num_qualities, (args.batch, args.crop // 16, args.crop // 16), generator=gen)
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if not n.endswith("quantiles")], lr=0.0)

    def step(transforms, forward) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with using_transforms(model, transforms):
            loss = rate_distortion_loss(forward(x, qmap), x, lambdas, qmap).loss
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    variants = {"eager": (None, model.forward), "--compile (transforms)": (compile_transforms(model), model.forward)}
    if args.full_forward:
        variants["whole forward compiled"] = (None, torch.compile(model.forward))
    first = {name: step(*v) for name, v in variants.items()}  # warm-up; for the compiled ones, the compile
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, v in variants.items():
            times[name].append(step(*v))
    eager = statistics.median(times["eager"])
    print(f"{args.crop}² × {args.batch}, {args.threads} threads, medians of {args.repeats} (torch {torch.__version__})\n")
    print("| variant | first step s | s/step | steps/s vs eager |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {first[name]:.1f} | {med:.3f} | {eager / med:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
