"""Guidance: tiny random ViTs of every family, μ±kσ levels, hierarchical fusion, video frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_vit

from cotam_llava.cli import main
from cotam_llava.codec.guidance import (
    GuidanceConfig,
    ShallowAttentionGuidance,
    fuse_hierarchical,
    guided_quality_map,
    levels_to_quality_map,
    quantize_levels,
    tile_boxes,
)
from cotam_llava.codec.quality_map import QualityMap
from cotam_llava.errors import ConfigError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


def _tiny(family: str, layers: int = 4, size: int = 112):
    return make_tiny_vit(family, layers, size, num_register_tokens=4)


FAMILIES = ["clip", "siglip", "dinov2", "dinov2reg", "internvl"]


@pytest.fixture(scope="module")
def saved_encoders(tmp_path_factory) -> dict[str, Path]:
    folders = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        folders[family] = tmp_path_factory.mktemp(family)
        _tiny(family).save_pretrained(folders[family])
    return folders


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from cotam_llava.imageio import to_uint8_array

    path = DATA / "kodak" / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return to_uint8_array(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_only_the_first_k_layers_and_maps_the_patch_grid(saved_encoders, photo, family):
    from cotam_llava.encoders import layer_list as _layer_list

    guidance = ShallowAttentionGuidance.from_pretrained(saved_encoders[family], GuidanceConfig(num_layers=3))
    assert guidance.encoder.config.num_hidden_layers == 3 and len(_layer_list(guidance.encoder)) == 3
    assert sum(p.numel() for p in guidance.parameters()) < sum(p.numel() for p in _tiny(family).parameters())
    maps = guidance([photo, photo[::-1].copy()])
    assert maps.shape == (2, 8, 8) and torch.isfinite(maps).all()
    assert torch.equal(guidance([photo]), guidance([photo]))  # deterministic
    assert not torch.equal(maps[0], maps[1])  # depends on the image
    qmap, importance = guided_quality_map(guidance, photo, base_quality=5)
    assert importance.shape == (8, 8) and qmap.shape == (8, 8)
    step = GuidanceConfig().step  # the default step
    assert set(qmap.levels()) <= {5 - step, 5, 5 + step} and len(qmap.levels()) >= 2
    assert qmap.cell_bits() <= 128 and QualityMap.from_bytes(qmap.to_bytes())[0] == qmap


def test_cls_row_and_siglip_column_semantics(photo):
    """[CLS] encoders use the [CLS] row of the mean attention; SigLIP the mean received attention."""
    for family in ("clip", "siglip"):
        torch.manual_seed(1)
        enc = _tiny(family, layers=3)
        guidance = ShallowAttentionGuidance(enc, GuidanceConfig(num_layers=2))
        x = guidance.preprocess([photo])
        attn = torch.stack(guidance.encoder(pixel_values=x, output_attentions=True).attentions).mean(dim=(0, 2))[0]
        expected = attn[0, 1:] if family == "clip" else attn.mean(dim=0)
        assert torch.allclose(guidance.attention_map(x)[0].reshape(-1), expected, atol=1e-6)


def test_unsupported_encoder_and_too_many_layers():
    with pytest.raises(ConfigError, match="does not support"):
        ShallowAttentionGuidance(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="needs 5 layers"):
        ShallowAttentionGuidance(_tiny("clip", layers=4), GuidanceConfig(num_layers=5))
    with pytest.raises(ConfigError, match="unknown guidance config keys"):
        GuidanceConfig.from_dict({"num_layers": 3, "kk": 1})


# ---------------------------------------------------------------------------- μ ± kσ
def test_three_levels_by_mean_plus_minus_k_sigma():
    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])  # μ = 4.5, σ ≈ 2.872
    levels = quantize_levels(values, num_levels=3, k=0.75)  # thresholds ≈ 2.346 and 6.654
    assert levels.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert quantize_levels(values, num_levels=3, k=0.45).tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]


def test_uniform_map_keeps_the_base_quality_and_levels_clamp():
    assert quantize_levels(torch.ones(8, 8)).unique().tolist() == [1]
    q = levels_to_quality_map(np.array([[0, 1, 2]]), base_quality=8, step=3, num_levels=3)
    assert q.grid.tolist() == [[5, 8, 9]]  # 8 + 3 clamps to 9
    q5 = levels_to_quality_map(np.array([[0, 1, 2, 3, 4]]), base_quality=4, step=1, num_levels=5)
    assert q5.grid.tolist() == [[2, 3, 4, 5, 6]]


def test_five_levels_are_ordered():
    values = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    levels = quantize_levels(values, num_levels=5, k=0.75)
    assert levels.unique().tolist() == [0, 1, 2, 3, 4]
    order = values.reshape(-1).argsort()
    assert (levels.reshape(-1)[order].diff() >= 0).all()  # monotone in the importance


# ---------------------------------------------------------------------------- hierarchical
def test_tile_boxes_cover_the_image():
    boxes = tile_boxes(768, 512, (2, 3))
    assert len(boxes) == 6 and boxes[0] == (0, 0, 256, 256) and boxes[-1] == (512, 256, 768, 512)


def test_fusion_is_the_sum_of_the_standardised_views():
    G, tiles = 4, (2, 3)
    global_map = torch.arange(48.0).reshape(6, 8)
    local = torch.randn(6, 5, 5, generator=torch.Generator().manual_seed(0))
    fused = fuse_hierarchical(global_map, local, tiles, G)
    assert fused.shape == (8, 12)
    # a constant global view contributes nothing: the fused map is the per-tile standardised local maps
    only_local = fuse_hierarchical(torch.ones(6, 8), local, tiles, G)
    block = only_local[:4, 4:8]
    assert abs(float(block.mean())) < 1e-5 and abs(float(block.std(unbiased=False)) - 1) < 1e-4
    # and adding it back gives the global part: fused − only_local = standardised pooled global
    diff = fused - only_local
    assert abs(float(diff.mean())) < 1e-5 and abs(float(diff.std(unbiased=False)) - 1) < 1e-4
    with pytest.raises(ConfigError):
        fuse_hierarchical(global_map, local[:5], tiles, G)


def test_hierarchical_quality_map_has_a_cell_grid_per_tile(saved_encoders, photo):
    guidance = ShallowAttentionGuidance.from_pretrained(saved_encoders["clip"])
    qmap, fused = guided_quality_map(guidance, photo, base_quality=5, tiles=(2, 2))
    assert qmap.shape == (16, 16) and fused.shape == (16, 16)


# ---------------------------------------------------------------------------- video
def test_frame_sampling_is_uniform_and_bounded():
    from cotam_llava.codec.video import sample_frame_indices

    assert sample_frame_indices(250, 5) == [0, 62, 124, 187, 249]
    assert sample_frame_indices(3, 16) == [0, 1, 2]


def test_video_container_round_trip(tmp_path, capsys):
    clip = DATA / "video" / "bikes.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not found")
    from cotam_llava.codec.video import read_frames

    frames, indices = read_frames(clip, 4)
    assert len(frames) == 4 and frames[0].shape == (272, 640, 3) and indices == [0, 83, 166, 249]
    ckpt = tmp_path / "codec"
    assert main(["init-codec", str(ckpt), "-q"]) == 0
    out = tmp_path / "clip.cotam"
    assert main(["encode", str(clip), "--frames", "4", "--canvas", "128", "-o", str(out), "--checkpoint", str(ckpt), "-q"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert [it["kind"] for it in items] == ["video frame"] * 4
    assert len({it["symbol_crc"] for it in items}) == 4  # four different frames, in one container
    assert main(["decode", str(out), "-o", str(tmp_path / "f.png"), "--checkpoint", str(ckpt), "-q"]) == 0
    assert sorted(p.name for p in tmp_path.glob("f_*.png")) == [f"f_{i:04d}.png" for i in range(4)]


def test_guidance_cli_draws_a_figure(saved_encoders, tmp_path):
    folder = saved_encoders["dinov2"]
    ckpt = tmp_path / "codec"
    assert main(["init-codec", str(ckpt), "-q"]) == 0
    img = DATA / "kodak" / "kodim23.png"
    if not img.is_file():
        pytest.skip(f"{img} not found")
    out = tmp_path / "map.png"
    assert main(["guidance", str(img), "-o", str(out), "--guidance", str(folder), "--checkpoint", str(ckpt), "-q"]) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 800


def test_guidance_cli_draws_the_hevc_base_with_its_block_qps(saved_encoders, tmp_path):
    img = DATA / "kodak" / "kodim23.png"
    if not img.is_file():
        pytest.skip(f"{img} not found")
    out = tmp_path / "map.png"
    args = ["guidance", str(img), "-o", str(out), "--guidance", str(saved_encoders["dinov2"]), "--codec", "hevc", "-q"]
    assert main(args) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 800
    assert main(args + ["--checkpoint", str(tmp_path)]) == 1  # the learned codec's option: a one-line error


def test_guidance_cli_draws_a_host_rule_map(saved_encoders, tmp_path):
    img = DATA / "kodak" / "kodim23.png"
    if not img.is_file():
        pytest.skip(f"{img} not found")
    out = tmp_path / "host.png"
    args = ["guidance", str(img), "-o", str(out), "--guidance", str(saved_encoders["dinov2"]), "--canvas", "256",
            "--checkpoint", str(REPO / "checkpoints" / "elic-small"), "--guidance-rule", "host", "-q"]
    assert main(args) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 800
    assert main(args[:-1] + ["--tiles", "2x2", "-q"]) == 1  # host maps code one view: a one-line error
