"""Check our DCAE against the authors' code: the same parameters, and the same networks' outputs for the same weights.

The authors' model (LabShuHangGU/DCAE, ``models/dcae.py``) is read from a local copy, never imported into the package
(it needs timm for two helpers, which does not import here: ``trunc_normal_`` and ``DropPath`` are stood in for by
``torch.nn.init.trunc_normal_`` and an identity, exact for a model in eval mode with drop-path 0, its default).

What it measures, on the paper's size (``dcae`` preset against ``DCAE()``):

- parameter counts, in all and per part (g_a, g_s, the entropy model), and which of ours the authors' lack
  (CoTAM's variable-rate gains);
- g_a and g_s: the authors' weights (random: N(0, 0.05²), LayerNorm gains 1 + that, relative position biases
  N(0, 1), so attention is far from uniform) copied into ours in order — our Swin blocks list their two residual
  scales first, the authors' last, the only difference of order — and the largest difference of the outputs for one
  random input (g_a: a 256² image; g_s: a 16² latent); ours run without the gains;
- the entropy model's networks, each on a random input with the same weights: h_a, both hyper-synthesis branches
  (their ``h_z_s1`` / ``h_z_s2``), every slice's μ, σ and LRP networks, and every slice's dictionary
  cross-attention (names mapped: their ``msa`` is our ``aggregation``, and so on; the dictionary copied too).

The slice loop itself (which slices feed which query, the rounding around μ, the ½·tanh of LRP) is not run side by
side: it is compared by reading, and our exact round-trip tests cover its coding.

    python eval/dcae_vs_authors.py --authors PATH/TO/DCAE/models/dcae.py [--out eval/results/dcae/authors_check.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
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
            _copy_random([(x, y) for (_, x), (_, y) in zip(p_theirs, p_ours)], generator, [n for n, _ in p_theirs])
            with torch.no_grad():
                inp = torch.rand(shape, generator=generator) if part == "g_a" else torch.randn(shape, generator=generator)
                out_theirs = getattr(theirs, part)(inp)
                out_ours = inp
                for stage in getattr(ours, part):  # the transforms alone, without CoTAM's gains
                    out_ours = stage(out_ours)
            entry.update(shape=list(out_theirs.shape), max_abs_diff=float((out_theirs - out_ours).abs().max()),
                         max_abs=float(out_theirs.abs().max()))
        report["transforms"][part] = entry
    report["entropy_model"] = _compare_entropy_model(theirs, ours, seed)
    return report


def _dictionary_name(name: str) -> str:
    """An authors' dictionary cross-attention parameter name → ours."""
    name = re.sub(r"^msa\.dense\.conv_layers\.(\d+)\.1\.", r"aggregation.dense.\1.", name)
    for old, new in (("msa.spatial_atte.conv1.", "aggregation.spatial."), ("msa.dense.proj.", "aggregation.proj."),
                     ("msa.", "aggregation."), ("mlp.dwconv.dwconv.", "mlp.dwconv."), ("output_trans.0.", "output_trans.")):
        if name.startswith(old):
            name = new + name[len(old):]
    return {"scale": "logit_scale"}.get(re.sub(r"^(res_scale_\d)\.scale$", r"\1", name), re.sub(r"^(res_scale_\d)\.scale$", r"\1", name))


def _attention_peak(net: torch.nn.Module, x: torch.Tensor, dt: torch.Tensor) -> float:
    """The mean over queries of the largest dictionary weight (1/K for uniform attention, 1 for one entry), so a
    match is not a match of two near-uniform averages. Follows the authors' forward up to the softmax."""
    with torch.no_grad():
        h = net.x_trans(x.permute(0, 2, 3, 1))
        h = net.msa(net.ln_scale(h)) + net.res_scale_1(h)
        q = net.q_trans(net.lnx(h))
        b, hh, ww, c = q.shape
        e = net.scale.shape[0]
        q = q.reshape(b, hh * ww, e, c // e).transpose(1, 2)
        d = net.dict_ln(dt)
        k = net.k(d).reshape(-1, e, c // e).transpose(0, 1)
        probs = torch.softmax(torch.einsum("benc,edc->bend", q, k) * net.scale, dim=-1)
    return float(probs.max(-1).values.mean())


def _copy_random(pairs: list[tuple[torch.Tensor, torch.Tensor]], generator: torch.Generator, names: list[str]) -> None:
    """The same random weights into both: N(0, 0.05²), but LayerNorm gains 1 + that and relative position biases
    N(0, 1) (``names``: the authors' names), so attention is far from uniform and its indexing is exercised."""
    with torch.no_grad():
        for name, (x, y) in zip(names, pairs):
            w = torch.randn(x.shape, generator=generator)
            if re.search(r"(^|\.)(ln\w*|dict_ln)\.weight$", name):
                w = 1.0 + 0.05 * w
            elif not name.endswith("relative_position_params"):
                w = 0.05 * w
            x.copy_(w)
            y.copy_(x)


def _diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    return {"shape": list(a.shape), "max_abs_diff": float((a - b).abs().max()), "max_abs": float(a.abs().max())}


def _compare_entropy_model(theirs: torch.nn.Module, ours: torch.nn.Module, seed: int) -> dict:
    lc = ours.latent_codec
    generator = torch.Generator().manual_seed(seed + 2)
    M, h = ours.config.M, 16
    out: dict = {}
    nets = [("h_a", theirs.h_a, lc.h_a, (1, M, h, h)), ("h_s_scale", theirs.h_z_s1, lc.h_s_scale, None),
            ("h_s_mean", theirs.h_z_s2, lc.h_s_mean, None)]
    for i in range(len(lc.mean_transforms)):
        nets += [(f"{kind}[{i}]", getattr(theirs, f"{their}_transforms")[i], getattr(lc, f"{kind}_transforms")[i], None)
                 for kind, their in (("mean", "cc_mean"), ("scale", "cc_scale"), ("lrp", "lrp"))]
    z_shape = None
    for name, net_theirs, net_ours, shape in nets:
        p_theirs = [p for _, p in net_theirs.named_parameters()]  # (names again below, for _copy_random)
        p_ours = [p for _, p in _ours_in_authors_order(list(net_ours.named_parameters()))]
        if len(p_theirs) != len(p_ours) or any(x.shape != y.shape for x, y in zip(p_theirs, p_ours)):
            out[name] = {"shape_mismatch": True}
            continue
        _copy_random(list(zip(p_theirs, p_ours)), generator, [n for n, _ in net_theirs.named_parameters()])
        if shape is None:
            first = next(m for m in net_theirs.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
            shape = z_shape if name.startswith("h_s") else (1, first.in_channels, h, h)
        inp = torch.randn(shape, generator=generator)
        with torch.no_grad():
            a, b = net_theirs(inp), net_ours(inp)
        if name == "h_a":
            z_shape = tuple(a.shape)
        out[name] = _diff(a, b)
    for i, (net_theirs, net_ours) in enumerate(zip(theirs.dt_cross_attention, lc.dict_attention)):
        ours_by_name = dict(net_ours.named_parameters())
        names = [(n, _dictionary_name(n)) for n, _ in net_theirs.named_parameters()]
        if sorted(m for _, m in names) != sorted(ours_by_name) or any(
                p.shape != ours_by_name[_dictionary_name(n)].shape for n, p in net_theirs.named_parameters()):
            out[f"dictionary[{i}]"] = {"name_or_shape_mismatch": True}
            continue
        named = list(net_theirs.named_parameters())
        _copy_random([(p, ours_by_name[_dictionary_name(n)]) for n, p in named], generator, [n for n, _ in named])
        with torch.no_grad():  # a logit scale of ≈ 3 (random weights give ≈ 0.05) makes the attention far from uniform
            net_theirs.scale.add_(3.0)
            ours_by_name["logit_scale"].copy_(net_theirs.scale)
            theirs.dt.copy_(torch.randn(theirs.dt.shape, generator=generator))
            lc.dictionary.copy_(theirs.dt)
            inp = torch.randn(1, net_theirs.x_trans.in_features, h, h, generator=generator)
            a, b = net_theirs(inp, theirs.dt[None]), net_ours(inp, lc.dictionary)
        out[f"dictionary[{i}]"] = _diff(a, b) | {"attention_max_weight": _attention_peak(net_theirs, inp, theirs.dt)}
    return out


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
    compared = [*report["transforms"].values(), *report["entropy_model"].values()]
    ok = p["ours"] - p["ours_gains"] == p["authors"] and all(
        t.get("max_abs_diff", float("inf")) <= 1e-5 * max(1.0, t.get("max_abs", 1.0)) for t in compared)
    print(f"same parameters (gains aside) and the same outputs of all {len(compared)} networks: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
