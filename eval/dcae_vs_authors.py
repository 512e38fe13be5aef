"""Check our DCAE against the authors' code: the same parameters, and the same transforms' outputs for the same weights.

The authors' model (LabShuHangGU/DCAE, ``models/dcae.py``) is read from a local copy, never imported into the package
(it needs timm for two helpers, which does not import here: ``trunc_normal_`` and ``DropPath`` are stood in for by
``torch.nn.init.trunc_normal_`` and an identity, exact for a model in eval mode with drop-path 0, its default).

What it measures, on the paper's size (``dcae`` preset against ``DCAE()``):

- parameter counts, in all and per part (g_a, g_s, the entropy model), and which of ours the authors' lack
  (CoTAM's variable-rate gains);
- g_a and g_s: the authors' weights (random, N(0, 0.05²)) copied into ours in order — our Swin blocks list their two
  residual scales first, the authors' last, the only difference of order — and the largest difference of the outputs
  for one random input (g_a: a 256² image; g_s: a 16² latent); ours run without the gains.

The entropy model (dictionary cross-attention, channel slices, latent residual prediction) is compared by parameter
count per part only: its modules are partitioned differently (our hyper-synthesis is one sequence per branch).

    python eval/dcae_vs_authors.py --authors PATH/TO/DCAE/models/dcae.py [--out eval/results/dcae/authors_check.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotam_llava import _compressai  # noqa: F401,E402  (compressai without torchvision)
from cotam_llava.codec.loading import codec_from_preset  # noqa: E402


def _timm_stand_in() -> None:
    """``timm.models.layers`` with the two names the authors' file imports."""
    layers = types.ModuleType("timm.models.layers")
    layers.trunc_normal_ = torch.nn.init.trunc_normal_

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            if drop_prob:
                raise ValueError("the stand-in DropPath is exact only for drop_prob 0")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    layers.DropPath = DropPath
    for name, module in (("timm", types.ModuleType("timm")), ("timm.models", types.ModuleType("timm.models")),
                         ("timm.models.layers", layers)):
        sys.modules.setdefault(name, module)


def load_authors(path: Path) -> type:
    _timm_stand_in()
    with tempfile.TemporaryDirectory() as tmp:  # matplotlib (imported there) wants a writable config dir
        import os

        os.environ.setdefault("MPLCONFIGDIR", tmp)
        spec = importlib.util.spec_from_file_location("authors_dcae", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.DCAE


def _ours_in_authors_order(params: list[tuple[str, torch.nn.Parameter]]) -> list[tuple[str, torch.nn.Parameter]]:
    """Our parameters with each Swin block's residual scales moved after its MLP, as the authors list them."""
    out, pending = [], {}
    for name, p in params:
        if name.rsplit(".", 1)[-1].startswith("res_scale"):
            pending.setdefault(name.rsplit(".", 1)[0], []).append((name, p))
            continue
        out.append((name, p))
        if name.endswith("mlp.fc2.bias"):
            out += pending.pop(name[: -len(".mlp.fc2.bias")], [])
    if pending:
        raise RuntimeError(f"residual scales without their block: {sorted(pending)}")
    return out


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compare(authors_cls: type, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    theirs = authors_cls().eval()
    ours = codec_from_preset("dcae", seed=seed).eval()
    gains = sum(_count(getattr(ours, n)) for n in ("gain_a", "gain_s", "gain_y", "gain_y_inv"))
    entropy_theirs = _count(theirs) - _count(theirs.g_a) - _count(theirs.g_s)
    report: dict = {
        "parameters": {
            "authors": _count(theirs), "ours": _count(ours), "ours_gains": gains,
            "g_a": [_count(theirs.g_a), _count(ours.g_a)], "g_s": [_count(theirs.g_s), _count(ours.g_s)],
            "entropy_model": [entropy_theirs, _count(ours.latent_codec)],
        },
        "transforms": {},
    }
    for part, shape in (("g_a", (1, 3, 256, 256)), ("g_s", (1, ours.config.M, 16, 16))):
        p_theirs = list(getattr(theirs, part).named_parameters())
        p_ours = _ours_in_authors_order(list(getattr(ours, part).named_parameters()))
        mismatched = [(a, tuple(x.shape), b, tuple(y.shape)) for (a, x), (b, y) in zip(p_theirs, p_ours) if x.shape != y.shape]
        entry: dict = {"tensors": [len(p_theirs), len(p_ours)], "shape_mismatches": mismatched[:3]}
        if not mismatched and len(p_theirs) == len(p_ours):
            generator = torch.Generator().manual_seed(seed + 1)
            with torch.no_grad():
                for (_, x), (_, y) in zip(p_theirs, p_ours):
                    x.copy_(torch.randn(x.shape, generator=generator) * 0.05)
                    y.copy_(x)
                inp = torch.rand(shape, generator=generator) if part == "g_a" else torch.randn(shape, generator=generator)
                out_theirs = getattr(theirs, part)(inp)
                out_ours = inp
                for stage in getattr(ours, part):  # the transforms alone, without CoTAM's gains
                    out_ours = stage(out_ours)
            entry.update(shape=list(out_theirs.shape), max_abs_diff=float((out_theirs - out_ours).abs().max()),
                         max_abs=float(out_theirs.abs().max()))
        report["transforms"][part] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--authors", required=True, type=Path, help="the authors' models/dcae.py (a local copy of LabShuHangGU/DCAE)")
    ap.add_argument("--out", type=Path, help="write the report as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.authors.is_file():
        ap.error(f"not a file: {args.authors}")
    report = compare(load_authors(args.authors), args.seed)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    p = report["parameters"]
    ok = p["ours"] - p["ours_gains"] == p["authors"] and all(
        t.get("max_abs_diff", float("inf")) <= 1e-5 * max(1.0, t.get("max_abs", 1.0)) for t in report["transforms"].values())
    print("same parameters (gains aside) and transforms: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
