"""Analysis tools (CoTAM §2): metrics on hand-built attention, every encoder family, and `cotam analyze`."""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cotam_llava.analysis.metrics import (
    FLOW_STAT_NAMES,
    StageSplit,
    TokenLayout,
    attention_distance,
    cls_attention,
    flow_statistics,
    information_flow,
    mean_pairwise_distance,
    pca_rgb,
    stage_boundaries,
    stages_by_thirds,
    token_similarity,
)
from cotam_llava.cli import main
from cotam_llava.errors import ConfigError


# ----------------------------------------------------------------------------- hand-built attention
def _neighbour_attention(grid: tuple[int, int], prefix: int = 0, prefix_weight: float = 0.0) -> torch.Tensor:
    """(1, 1, T, T): every patch query puts (1 − prefix_weight) on its right neighbour (left one in the last
    column) and prefix_weight spread over the prefix tokens; prefix queries attend uniformly."""
    gh, gw = grid
    P = gh * gw
    T = prefix + P
    A = torch.zeros(T, T)
    A[:prefix] = 1.0 / T
    for r, c in itertools.product(range(gh), range(gw)):
        i = prefix + r * gw + c
        j = prefix + r * gw + (c + 1 if c + 1 < gw else c - 1)
        A[i, j] = 1.0 - prefix_weight
        if prefix:
            A[i, :prefix] = prefix_weight / prefix
    return A[None, None]


@pytest.mark.parametrize("prefix,weight", [(0, 0.0), (1, 0.0), (1, 0.6), (5, 0.3)])
def test_neighbour_attention_is_one_patch(prefix, weight):
    layout = TokenLayout((3, 4), has_cls=prefix > 0, num_registers=max(0, prefix - 1))
    res = attention_distance(_neighbour_attention((3, 4), prefix, weight), layout)
    for value in (res.d_avg, res.d_top1, res.d_avg_heads, res.d_top1_heads):
        assert torch.allclose(value, torch.ones_like(value)), value


def test_uniform_attention_gives_mean_pairwise_distance():
    # 2×2 grid: from any patch the distances are 0, 1, 1, √2 → mean (2 + √2) / 4
    assert mean_pairwise_distance((2, 2)) == pytest.approx((2 + math.sqrt(2)) / 4)
    grid = (3, 5)
    cells = list(itertools.product(range(3), range(5)))
    brute = np.mean([math.hypot(a[0] - b[0], a[1] - b[1]) for a in cells for b in cells])
    assert mean_pairwise_distance(grid) == pytest.approx(brute)
    layout = TokenLayout(grid, has_cls=True)
    T = layout.num_tokens
    A = torch.full((2, 3, T, T), 1.0 / T)  # uniform over all tokens: [CLS] share is renormalised away
    res = attention_distance(A, layout)
    assert torch.allclose(res.d_avg, torch.full((2,), brute, dtype=torch.float32), atol=1e-5)
    assert res.d_avg_heads.shape == (2, 3)


def test_top1_ignores_cls_and_head_average_differs_from_per_head():
    layout = TokenLayout((1, 3), has_cls=True)
    # patch queries put most weight on [CLS]; among patches head 0 looks 2 to the right/left, head 1 at itself
    h0 = torch.tensor([[1, 0, 0, 0], [.7, 0, 0, .3], [.7, .1, .1, .1], [.7, .3, 0, 0]])
    h1 = torch.tensor([[1, 0, 0, 0], [.6, .4, 0, 0], [.6, 0, .4, 0], [.6, 0, 0, .4]])
    res = attention_distance(torch.stack([h0, h1])[None], layout)
    assert res.d_top1_heads[0, 1].item() == pytest.approx(0.0)
    # head 0: queries p0→p2 (2), p1: tie → first (p0, 1), p2→p0 (2): mean 5/3
    assert res.d_top1_heads[0, 0].item() == pytest.approx(5 / 3)
    assert res.d_avg_heads[0, 1].item() == pytest.approx(0.0)
    assert res.d_avg_heads[0, 0].item() == pytest.approx((2 + (1 + 0 + 1) / 3 + 2) / 3)


def test_attention_distance_rejects_bad_shapes():
    with pytest.raises(ConfigError):
        attention_distance(torch.zeros(1, 1, 5, 5), TokenLayout((2, 2), has_cls=False))
    with pytest.raises(ConfigError):
        attention_distance(torch.zeros(1, 5, 5), TokenLayout((2, 2), has_cls=True))


def test_inflow_outflow_argmax_on_a_hand_made_matrix():
    layout = TokenLayout((1, 2), has_cls=True)  # tokens: [CLS], p(0,0), p(0,1)
    A = torch.tensor([[.1, .6, .3],
                      [.7, .2, .1],
                      [.2, .3, .5]])
    flow = information_flow(A[None])
    assert flow.inflow[0].tolist() == [1, 0, 2]  # row argmax: what each token takes most from
    assert flow.outflow[0].tolist() == [1, 0, 2]  # column argmax: who takes most from each token
    stats = flow_statistics(flow, layout)
    assert stats.inflow_to_cls.item() == pytest.approx(0.5)
    assert stats.inflow_to_self.item() == pytest.approx(0.5)
    assert stats.inflow_distance.item() == pytest.approx(0.0)
    assert stats.outflow_to_cls.item() == pytest.approx(0.5)
    assert stats.inflow_to_registers.item() == 0.0
    # a second matrix: both patches take most from each other → distance 1; outflow from p(0,0) goes to [CLS]
    B = torch.tensor([[.1, .8, .1],
                      [.1, .1, .8],
                      [.1, .8, .1]])
    f2 = information_flow(torch.stack([B, B])[:, None])  # (B, H=1, T, T) is averaged over heads
    assert f2.inflow[0].tolist() == [1, 2, 1]
    assert f2.outflow[0].tolist() == [0, 0, 1]
    s2 = flow_statistics(f2, layout)
    assert s2.inflow_distance.tolist() == pytest.approx([1.0, 1.0])
    assert s2.inflow_top5_share.tolist() == pytest.approx([1.0, 1.0])
    assert s2.outflow_to_cls.tolist() == pytest.approx([0.5, 0.5])
    assert s2.outflow_distance.tolist() == pytest.approx([1.0, 1.0])
    assert set(stats.as_dict()) == set(FLOW_STAT_NAMES)


def test_flow_without_cls_reports_nan_share():
    layout = TokenLayout((2, 2), has_cls=False)
    A = torch.eye(4)[None]
    stats = flow_statistics(information_flow(A), layout)
    assert math.isnan(stats.inflow_to_cls.item())
    assert stats.inflow_to_self.item() == 1.0 and stats.outflow_distance.item() == 0.0


def test_cls_attention_and_siglip_stand_in():
    layout = TokenLayout((2, 2), has_cls=True)
    A = torch.zeros(1, 2, 5, 5)
    A[0, :, 0] = torch.tensor([.2, .4, .2, .1, .1])  # [CLS] row: patches get .4 .2 .1 .1 → /0.8
    A[0, :, 1:] = 0.2
    m = cls_attention(A, layout)
    assert m.shape == (1, 2, 2)
    assert torch.allclose(m[0].flatten(), torch.tensor([.5, .25, .125, .125]))
    siglip = TokenLayout((1, 2), has_cls=False)
    S = torch.tensor([[[.9, .1], [.5, .5]]])  # patch 0 receives (.9 + .5) / 2, patch 1 (.1 + .5) / 2
    assert torch.allclose(cls_attention(S, siglip)[0, 0], torch.tensor([.7, .3]))


def test_token_similarity_identity_and_orthogonal():
    layout = TokenLayout((2, 2), has_cls=True)
    h = torch.randn(3, 5, 8)
    s = token_similarity(h, h.clone(), layout)
    assert torch.allclose(s.tokens, torch.ones(3)) and torch.allclose(s.cls, torch.ones(3))
    assert s.per_patch.shape == (3, 2, 2)
    other = h.clone()
    other[:, 1:] = -other[:, 1:]  # patches flipped: cos −1, [CLS] kept
    s2 = token_similarity(h, other, layout)
    assert torch.allclose(s2.patches, -torch.ones(3)) and torch.allclose(s2.tokens, torch.full((3,), -3 / 5))


def test_pca_rgb_range_and_shared_basis():
    torch.manual_seed(0)
    tokens = torch.randn(16, 6) @ torch.diag(torch.tensor([5.0, 3, 2, .1, .1, .1]))
    rgb, basis = pca_rgb(tokens)
    assert rgb.shape == (16, 3) and rgb.min() >= 0 and rgb.max() <= 1
    again, _ = pca_rgb(tokens, basis)
    assert torch.allclose(rgb, again)
    flat, _ = pca_rgb(torch.ones(4, 2))  # degenerate input: no NaN
    assert torch.isfinite(flat).all()


def test_stage_boundaries_from_u_shape_and_fallback():
    u = [6.0, 5.5, 4.0, 2.5, 2.0, 2.1, 2.4, 3.5, 5.0, 5.8, 6.0, 6.2]
    s = stage_boundaries(u)
    assert s.method.startswith("attention-distance")
    assert 1 <= s.stage2_start <= 4 < s.stage3_start < 12
    assert (s.stage2_start, s.stage3_start) == (2, 8)  # half-height crossings: 4.0 ≤ 4.0 at 2, 5.0 ≥ 4.1 at 8
    assert [s.stage_of(l) for l in (0, 3, 7, 8)] == [1, 2, 2, 3]
    mono = stage_boundaries(list(range(12, 0, -1)))
    assert mono.method == "thirds" and "no U-shape" in mono.note
    assert (mono.stage2_start, mono.stage3_start) == (4, 8)
    assert (stages_by_thirds(4).stage2_start, stages_by_thirds(4).stage3_start) == (1, 3)
    with pytest.raises(ConfigError):
        StageSplit(12, 8, 4)


def test_running_stats_and_strict_json(tmp_path):
    from cotam_llava.analysis._common import RunningStats, write_json

    rs = RunningStats(2)
    rs.add([1.0, float("nan")])
    rs.add([3.0, 2.0])
    assert rs.mean.tolist() == [2.0, 2.0] and rs.std.tolist() == [1.0, 0.0]
    path = write_json(tmp_path / "x.json", {"a": float("nan"), "t": torch.tensor([1.0, float("inf")]), "s": StageSplit(3, 1, 2)})
    assert json.loads(path.read_text()) == {"a": None, "t": [1.0, None],
                                             "s": {"num_layers": 3, "stage2_start": 1, "stage3_start": 2,
                                                   "method": "user", "note": ""}}


# ----------------------------------------------------------------------------- tiny encoders of every family
def _tiny(family: str, layers: int = 4, size: int = 56):
    from conftest import make_tiny_vit

    torch.manual_seed(0)
    return make_tiny_vit(family, layers, size, num_register_tokens=2)


def _photo(i: int, h: int = 60, w: int = 84) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 3 + 40 * i) % 256, (y * 4) % 256, ((x * y) // 7 + 90 * i) % 256], axis=-1).astype(np.uint8)


class _PNGCodec:
    """Lossless stand-in codec: decoding gives back the exact image."""

    name = "png"
    default_qualities = (0,)

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB")).copy()


@pytest.mark.parametrize("family", ["clip", "siglip", "dinov2reg", "internvl"])
def test_every_family_distance_similarity_maps(family):
    from cotam_llava.analysis.distance import analyze_attention_distance
    from cotam_llava.analysis.encoder import AnalysisEncoder
    from cotam_llava.analysis.maps import analyze_maps
    from cotam_llava.analysis.similarity import analyze_similarity
    from cotam_llava.codec.registry import get_codec

    enc = AnalysisEncoder(_tiny(family, layers=3), family)
    assert enc.layout.has_cls == (family != "siglip")
    assert enc.layout.num_registers == (2 if family == "dinov2reg" else 0)
    images = [_photo(0), _photo(1)]
    dist = analyze_attention_distance(enc, images, batch_size=2, progress=False)
    assert len(dist.d_avg) == 3 and np.asarray(dist.d_avg_heads).shape == (3, 2)
    assert all(0 <= v <= math.hypot(4, 4) for v in dist.d_avg + dist.d_top1)
    assert (family == "siglip") == all(math.isnan(v) for v in dist.flow["inflow_to_cls"])
    rep = analyze_similarity(enc, images, [(_PNGCodec(), [0]), (get_codec("jpeg"), [5])], stages="thirds",
                             progress=False)
    lossless, jpeg = rep.points
    assert np.allclose(lossless.similarity, 1.0, atol=1e-5) and len(lossless.similarity) == 4
    assert np.all(np.asarray(jpeg.similarity) < 1.0) and jpeg.bpp > 0
    maps, decoded = analyze_maps(enc, images[0], [0, 2], get_codec("jpeg"), 10)
    assert decoded.shape == images[0].shape
    m = np.asarray(maps.maps[0].cls_attention)
    assert m.shape == (4, 4) and m.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.asarray(maps.maps[1].pca).shape == (4, 4, 3)
    assert 0 < maps.maps[0].similarity_mean <= 1


def test_similarity_identical_is_one_and_auto_stages():
    from cotam_llava.analysis.encoder import AnalysisEncoder
    from cotam_llava.analysis.similarity import analyze_similarity
    from cotam_llava.analysis.summary import summarize_similarity

    enc = AnalysisEncoder(_tiny("dinov2", layers=4), "dinov2")
    rep = analyze_similarity(enc, [_photo(0)], [(_PNGCodec(), [0, 1])], stages="auto", progress=False)
    assert len(rep.d_avg) == 4 and rep.stages.num_layers == 4
    for p in rep.points:
        assert np.allclose(p.similarity, 1.0, atol=1e-5)
        assert np.allclose(p.patch_similarity, 1.0, atol=1e-5) and np.allclose(p.cls_similarity, 1.0, atol=1e-5)
    rows = summarize_similarity(rep)
    assert not rows[0].early_stage3_dip


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vit") / "tiny-dinov2"
    _tiny("dinov2", layers=4).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(2):
        Image.fromarray(_photo(i, 70, 98)).save(folder / f"img{i}.png")
    return folder


def _strict_json(path: Path):
    def bad(value):
        raise AssertionError(f"{path} contains {value}")

    return json.loads(path.read_text(), parse_constant=bad)


def _png_ok(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100
    assert path.stat().st_size < 300_000


def test_cli_distance(tiny_model, photo_dir, tmp_path):
    out = tmp_path / "d"
    assert main(["analyze", "distance", str(photo_dir), "--model", str(tiny_model), "--out", str(out), "-q"]) == 0
    report = _strict_json(out / "attention_distance.json")
    assert report["num_images"] == 2 and len(report["d_avg"]) == 4 and len(report["d_top1_heads"][0]) == 2
    assert report["model"]["grid"] == [4, 4] and "renormalised" in report["convention"]
    assert set(report["flow"]) == set(FLOW_STAT_NAMES) and report["stages"]["num_layers"] == 4
    _png_ok(out / "attention_distance.png")
    _png_ok(out / "flow_statistics.png")


def test_cli_flow(tiny_model, photo_dir, tmp_path):
    out = tmp_path / "f"
    assert main(["analyze", "flow", str(photo_dir / "img0.png"), "--model", str(tiny_model), "--layers", "0,-1",
                 "--out", str(out), "-q"]) == 0
    report = _strict_json(out / "flow_img0.json")
    assert report["layers"] == [0, 3] and [f["layer"] for f in report["flows"]] == [0, 3]
    assert len(report["flows"][0]["inflow"]) == 17 and report["tokens"][0] == "[CLS]"
    assert len(report["statistics"]["inflow_to_cls"]) == 4
    _png_ok(out / "flow_img0.png")
    _png_ok(out / "flow_img0_layers.png")


def test_cli_similarity_and_summary(tiny_model, photo_dir, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["analyze", "similarity", str(photo_dir), "--model", str(tiny_model), "--codecs", "jpeg",
                 "--qualities", "jpeg=10,60", "--stages", "1,3", "--out", str(out), "-q"]) == 0
    report = _strict_json(out / "similarity.json")
    assert [(p["codec"], p["quality"]) for p in report["points"]] == [("jpeg", 10), ("jpeg", 60)]
    assert report["layer_labels"] == ["emb", "0", "1", "2", "3"]
    assert report["stages"]["stage2_start"] == 1 and report["stages"]["method"] == "user"
    low, high = report["points"]
    assert low["bpp"] < high["bpp"] and all(0 < v <= 1 for v in low["similarity"])
    summary = _strict_json(out / "summary.json")
    assert len(summary["rows"]) == 2 and {"lowest_layers", "largest_drop_layer", "early_stage3_dip"} <= set(summary["rows"][0])
    assert "| jpeg | 10 |" in (out / "summary.md").read_text()
    _png_ok(out / "similarity.png")
    out2 = tmp_path / "sum"
    assert main(["analyze", "summary", str(out / "similarity.json"), str(out / "similarity.json"),
                 "--stages", "thirds", "--out", str(out2)]) == 0
    assert "early-stage-3 dip" in capsys.readouterr().out
    assert len(_strict_json(out2 / "summary.json")["rows"]) == 4
    _png_ok(out2 / "similarity.png")


def test_cli_maps(tiny_model, photo_dir, tmp_path):
    out = tmp_path / "m"
    assert main(["analyze", "maps", str(photo_dir / "img1.png"), "--model", str(tiny_model), "--layers", "0,2",
                 "--codec", "jpeg", "--quality", "20", "--out", str(out), "-q"]) == 0
    report = _strict_json(out / "maps_img1_jpeg-q20.json")
    assert report["layers"] == [0, 2] and report["codec"] == "jpeg" and report["bpp"] > 0
    assert np.asarray(report["maps"][0]["pca"]).shape == (4, 4, 3)
    assert np.asarray(report["maps"][1]["similarity_map"]).shape == (4, 4)
    _png_ok(out / "maps_img1_jpeg-q20.png")
    assert main(["analyze", "maps", str(photo_dir / "img1.png"), "--model", str(tiny_model), "--out", str(out), "-q"]) == 0
    assert _strict_json(out / "maps_img1.json")["codec"] is None


def test_cli_maps_with_the_learned_codec(tiny_model, photo_dir, tmp_path):
    ckpt = tmp_path / "codec"
    assert main(["init-codec", str(ckpt), "--preset", "tiny", "-q"]) == 0  # untrained: only the plumbing is tested
    out = tmp_path / "m"
    assert main(["analyze", "maps", str(photo_dir / "img0.png"), "--model", str(tiny_model), "--layers", "1",
                 "--codec", "cotam-elic", "--quality", "3", "--checkpoint", str(ckpt), "--out", str(out), "-q"]) == 0
    report = _strict_json(out / "maps_img0_cotam-elic-q3.json")
    assert report["codec"] == "cotam-elic" and report["quality"] == 3 and report["bpp"] > 0
    _png_ok(out / "maps_img0_cotam-elic-q3.png")


@pytest.mark.parametrize("argv,message", [
    (["distance", "NOPE_DIR"], "not a folder"),
    (["flow", "missing.png"], "image file not found"),
    (["maps", "{img}", "--layers", "0,9"], "out of range"),
    (["maps", "{img}", "--codec", "jpeg"], "--codec needs --quality"),
    (["similarity", "{dir}", "--codecs", "jpeg", "--qualities", "webp=10"], "not in --codecs"),
    (["similarity", "{dir}", "--codecs", "bogus"], "unknown codec"),
    (["similarity", "{dir}", "--stages", "3,1"], "stage boundaries"),
    (["distance", "{dir}", "--model", "./no/such/model"], "model folder not found"),
    (["summary", "{img}"], "similarity report"),
])
def test_cli_errors_are_one_line(tiny_model, photo_dir, tmp_path, capsys, argv, message):
    argv = [a.format(img=photo_dir / "img0.png", dir=photo_dir) for a in argv]
    if "--model" not in argv and argv[0] != "summary":
        argv += ["--model", str(tiny_model)]
    argv += ["--out", str(tmp_path / "o"), "-q"]
    assert main(["analyze", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cotam: error:") and message in err and "\n" not in err, err
