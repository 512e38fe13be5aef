"""Rate-constrained quality maps (issue 19 item 3): the allocation on hand-made cases with known answers, the map's
side bits as written, and the rate constraint on a real photo with the shipped codec."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cotam_llava.codec.guidance import GuidanceConfig, HostGuidance, guided_quality_map, load_guidance
from cotam_llava.codec.guidance.allocation import (allocate, change_penalties, host_distortion, map_side_bits,
                                                   probe_levels, probe_standard, rate_matched_map)
from cotam_llava.codec.pipeline import decode, encode_item, pack
from cotam_llava.codec.quality_map import QualityMap
from cotam_llava.errors import ConfigError

from conftest import REPO_ROOT, make_tiny_vit


def test_allocate_moves_bits_from_the_cheap_loss_to_the_big_gain():
    # options: down, keep, up; cell 0 gains a lot from going up, cell 1 loses little from going down
    bits = np.array([[5.0, 5.0], [10.0, 10.0], [15.0, 15.0]])
    dist = np.array([[20.0, 1.1], [10.0, 1.0], [0.0, 0.9]])
    assert allocate(bits, dist, budget=20.0).tolist() == [2, 0]
    assert allocate(bits, dist, budget=30.0).tolist() == [2, 2]  # room for everything: least distortion
    assert allocate(bits, dist, budget=3.0).tolist() == [0, 0]  # nothing fits: the cheapest options


def test_allocate_fits_the_budget_and_is_near_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for _ in range(40):
        bits = np.sort(rng.uniform(1, 20, size=(3, 4)), axis=0)
        dist = -np.sort(-rng.uniform(0, 10, size=(3, 4)), axis=0)  # more bits, less distortion
        budget = float(bits[1].sum())
        choice = allocate(bits, dist, budget, fallback=np.ones(4, dtype=int))
        cols = np.arange(4)
        assert bits[choice, cols].sum() <= budget + 1e-9
        assert dist[choice, cols].sum() <= dist[1].sum() + 1e-12  # never worse than the uniform choice that fits
        best = min(dist[list(c), cols].sum() for c in itertools.product(range(3), repeat=4)
                   if bits[list(c), cols].sum() <= budget)
        assert dist[choice, cols].sum() <= best * 1.5 + 1e-9


def test_allocate_rejects_mismatched_tables():
    with pytest.raises(ConfigError, match="options, cells"):
        allocate(np.zeros((3, 4)), np.zeros((3, 5)), 1.0)


@pytest.mark.parametrize("levels", [2, 3, 5, 9])
def test_map_side_bits_are_what_the_map_writes(levels):
    grid = (np.arange(64) % levels).reshape(8, 8).astype(np.int64)
    assert map_side_bits(64, levels) == 8 * len(QualityMap(grid).to_bytes())


def test_host_rule_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match="allocation must be one of"):
        GuidanceConfig(allocation="greedy")
    host = HostGuidance(make_tiny_vit("dinov2", layers=2), GuidanceConfig(allocation="host"))
    with pytest.raises(ConfigError, match="needs the codec"):
        guided_quality_map(host, np.zeros((64, 64, 3), np.uint8), 3)
    with pytest.raises(ConfigError, match="allocation='host'"):
        HostGuidance(make_tiny_vit("dinov2", layers=2), GuidanceConfig())


def test_load_guidance_keeps_the_whole_encoder_for_the_host_rule(tmp_path):
    make_tiny_vit("dinov2", layers=3).save_pretrained(tmp_path)
    host = load_guidance(str(tmp_path), GuidanceConfig(allocation="host"))
    shallow = load_guidance(str(tmp_path), GuidanceConfig(num_layers=1))
    assert isinstance(host, HostGuidance) and len(host.encoder.encoder.layer) == 3
    assert len(shallow.encoder.encoder.layer) == 1


@pytest.fixture(scope="module")
def shipped_codec():
    from cotam_llava.codec.loading import load_codec

    return load_codec(REPO_ROOT / "checkpoints" / "elic-small")


@pytest.fixture(scope="module")
def photo(kodak_photo) -> np.ndarray:
    return np.ascontiguousarray(kodak_photo[128:384, 256:512])  # 256 × 256 of kodim23


def test_probe_bits_match_the_real_file(shipped_codec, photo):
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    probe = probe_levels(shipped_codec, x, [3, 4], (8, 8))
    for i, q in enumerate(probe.levels):
        real = 8 * sum(len(s) for s in shipped_codec.compress(x, q).strings)
        assert abs(probe.bits[i].sum() - real) / real < 0.03


@pytest.mark.parametrize("quality", [2, 5])
def test_host_maps_keep_the_uniform_rate_and_round_trip(shipped_codec, photo, quality):
    torch.manual_seed(0)
    host = HostGuidance(make_tiny_vit("dinov2", layers=2, size=112), GuidanceConfig(allocation="host", grid=4))
    uniform = pack(shipped_codec, [encode_item(shipped_codec, photo, quality).item])
    enc = encode_item(shipped_codec, photo, quality, guidance=host)
    data = pack(shipped_codec, [enc.item])
    assert len(data) <= len(uniform) * (1 + host.config.rate_tolerance)
    assert enc.importance.shape == (4, 4)
    assert enc.item.quality_map is not None  # a real map (cells differ to the tiny random host)
    assert set(enc.item.quality_map.levels()) <= {quality - 1, quality, quality + 1}
    assert len(enc.item.quality_map.levels()) > 1
    (decoded,) = decode(shipped_codec, data)
    assert decoded.to_pil().size == (256, 256)


def test_rate_matched_map_lowers_the_modelled_distortion(shipped_codec, photo):
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    host = HostGuidance(make_tiny_vit("dinov2", layers=2, size=112), GuidanceConfig(allocation="host", grid=4))
    error = host.token_error(host.tokens(x))
    qmap, probe, d = rate_matched_map(shipped_codec, x, 4, host.config, lambda p, b: host_distortion(p, b, error))
    base = probe.levels.index(4)
    assert qmap is not None
    choice = np.searchsorted(probe.levels, qmap.grid.reshape(-1))
    assert d[choice, np.arange(d.shape[1])].sum() < d[base].sum()


def test_change_penalties_start_at_zero_and_grow():
    d = np.array([[5.0, 1.0, 3.0, 2.0], [4.0, 1.0, 2.0, 2.0], [0.0, 0.5, 2.5, 2.0]])
    assert change_penalties(d, 1, 1) == [0.0]
    p = change_penalties(d, 1, 3)  # |changes|: 1, 0, 1, 0 and 4, 0.5, 0.5, 0: medians then 3rd quartile
    assert p[0] == 0.0 and p[1] == pytest.approx(0.5) and p[2] == pytest.approx(1.0)


def _judged(shipped_codec, x, quality, judge_errors, candidates=3):
    """rate_matched_map with a judge that records what it is shown and answers ``judge_errors(n)``."""
    host = HostGuidance(make_tiny_vit("dinov2", layers=2, size=112),
                        GuidanceConfig(allocation="host", grid=4, verify=True, candidates=candidates))
    error = host.token_error(host.tokens(x))
    seen = []

    def judge(files):
        seen.extend(files)
        return judge_errors(len(files))
    qmap, _, _ = rate_matched_map(shipped_codec, x, quality, host.config, lambda p, b: host_distortion(p, b, error),
                                  judge=judge)
    return qmap, seen


def test_judged_maps_are_real_files_and_the_least_error_wins(shipped_codec, photo):
    torch.manual_seed(0)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    qmap, seen = _judged(shipped_codec, x, 4, lambda n: np.linspace(1.0, 0.5, n))  # the last candidate is best
    assert len(seen) >= 2 and qmap is not None
    uniform = pack(shipped_codec, [encode_item(shipped_codec, photo, 4).item])
    assert seen[0].levels.unique().tolist() == [4]
    assert torch.equal(seen[0].x_hat, decode(shipped_codec, uniform)[0].x_hat[0])
    chosen = pack(shipped_codec, [encode_item(shipped_codec, photo, 4, quality_map=qmap).item])
    (decoded,) = decode(shipped_codec, chosen)  # the judge saw exactly what the cloud decodes from the chosen file
    assert torch.equal(seen[-1].x_hat, decoded.x_hat[0])
    assert torch.equal(seen[-1].levels, torch.from_numpy(qmap.expand(16, 16).astype(np.int64)))
    assert len(chosen) <= len(uniform) * 1.005
    # candidates differ, and the uniform file wins when no map beats it (ties included)
    assert len({tuple(f.levels.reshape(-1).tolist()) for f in seen}) == len(seen)
    assert _judged(shipped_codec, x, 4, lambda n: np.r_[0.5, np.full(n - 1, 0.5)])[0] is None


def test_verified_host_maps_never_judge_worse_than_uniform(shipped_codec, photo):
    torch.manual_seed(0)
    host = HostGuidance(make_tiny_vit("dinov2", layers=2, size=112),
                        GuidanceConfig(allocation="host", grid=4, verify=True, candidates=2))
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    error = host.token_error(host.tokens(x))
    for q in (2, 5):
        enc = encode_item(shipped_codec, photo, q, guidance=host)
        files = [pack(shipped_codec, [encode_item(shipped_codec, photo, q).item]), pack(shipped_codec, [enc.item])]
        pictures = [decode(shipped_codec, f)[0].x_hat[0] for f in files]
        e_uniform, e_guided = error(torch.stack(pictures)).tolist()
        assert e_guided <= e_uniform
        assert len(files[1]) <= len(files[0]) * (1 + host.config.rate_tolerance)


def test_host_rule_needs_one_view_and_per_region_quality(shipped_codec, photo):
    from cotam_llava.codec.standard import StandardCodec

    host = HostGuidance(make_tiny_vit("dinov2", layers=2), GuidanceConfig(allocation="host", grid=4))
    with pytest.raises(ConfigError, match="one view"):
        encode_item(shipped_codec, photo, 3, guidance=host, tiles=(1, 2))
    with pytest.raises(ConfigError, match="no per-region quality"):
        encode_item(StandardCodec("av1"), photo, 3, guidance=host)


def test_hevc_probe_is_what_real_files_say(photo):
    from cotam_llava.codec.standard import StandardCodec

    codec = StandardCodec("hevc")
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    probe = probe_standard(codec, x, [3, 4], (2, 2), 4)
    uniform = len(codec.compress_image(photo, 4).streams[0])
    assert probe.bits[1].sum() == pytest.approx(8 * uniform)  # the uniform choice is the base file
    cells = np.full((2, 2), 4)
    cells[1, 0] = 3
    item, picture = codec.roundtrip(photo, 4, QualityMap(cells))
    assert probe.bits[0, 2] == pytest.approx(8 * (len(item.streams[0]) - uniform) + 2 * uniform)
    assert torch.equal(probe.splice(1, 2, 0), torch.from_numpy(picture).permute(2, 0, 1).float() / 255)
    assert probe.bits[0].sum() < probe.bits[1].sum()  # a level down in every cell: fewer bits
    with pytest.raises(ConfigError, match="no latents"):
        probe.splice_coded(1, 2, 0)


@pytest.mark.parametrize("quality", [3, 6])
def test_hevc_host_maps_keep_the_uniform_rate_and_decode(photo, quality):
    from cotam_llava.codec import standard
    from cotam_llava.codec.standard import StandardCodec

    torch.manual_seed(0)
    codec = StandardCodec("hevc")
    host = HostGuidance(make_tiny_vit("dinov2", layers=2, size=112), GuidanceConfig(allocation="host", grid=4))
    uniform = codec.encode(photo, quality)
    enc = encode_item(codec, photo, quality, guidance=host)
    data = pack(codec, [enc.item])
    assert len(data) <= len(uniform) * (1 + host.config.rate_tolerance)
    assert enc.importance.shape == (4, 4)
    assert enc.item.quality_map is not None  # a real map (cells differ to the tiny random host)
    assert set(enc.item.quality_map.levels()) <= {quality - 1, quality, quality + 1}
    (decoded,) = standard.decode(data)
    assert decoded.to_pil().size == (256, 256)
    assert pack(codec, [encode_item(codec, photo, quality, guidance=host).item]) == data  # the same file every time


def test_cloud_maps_judge_the_tokens_the_tower_makes_adapter_included(shipped_codec, photo):
    import transformers

    from cotam_llava.training.adapter_trainer import build_tower

    torch.manual_seed(0)
    encoder = make_tiny_vit("dinov2", layers=2, size=112)
    processor = transformers.BitImageProcessor(size={"height": 112, "width": 112}, do_center_crop=False)
    tower = build_tower(encoder, processor, shipped_codec).eval()
    for p in tower.adapter.parameters():  # a non-zero adapter: its enhancement must enter the error
        p.data.normal_(0, 0.02)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    probe = probe_levels(shipped_codec, x, [3, 4, 5], (4, 4))
    x_hat, y_hat, levels = probe.splice_coded(1, 5, 2)  # cell 5 from q5, the rest q4
    cell = torch.from_numpy(probe.pixel_cells[::16, ::16] == 5)
    assert torch.equal(levels, torch.where(cell, 5, 4)) and cell.sum() == 16  # 16×16 latent, 4×4 cells of 4×4
    assert torch.equal(y_hat[:, cell], probe.latents[2][:, cell]) and torch.equal(y_hat[:, ~cell], probe.latents[1][:, ~cell])
    assert torch.equal(x_hat, probe.splice(1, 5, 2))

    host = HostGuidance(encoder, GuidanceConfig(allocation="host", grid=4), tower=tower)
    error = host.cloud_error(x)
    d = host_distortion(probe, 1, error, coded=True)
    with torch.no_grad():  # the base row: the uniform q4 stream through the tower, adapter on
        ref = tower.encode_images(x, compress=False).last_hidden_state
        out = tower.encode_images(x, 4).last_hidden_state
    want = 1 - torch.nn.functional.cosine_similarity(out.double(), ref.double(), dim=-1).mean()
    assert d[1, 0] == pytest.approx(float(want), rel=1e-5)
    with tower.variant(adapter=False):
        assert host_distortion(probe, 1, host.cloud_error(x), coded=True)[1, 0] != pytest.approx(d[1, 0], rel=1e-6)
    uniform = pack(shipped_codec, [encode_item(shipped_codec, photo, 4).item])
    enc = encode_item(shipped_codec, photo, 4, guidance=host)
    assert len(pack(shipped_codec, [enc.item])) <= len(uniform) * (1 + host.config.rate_tolerance)
