"""CoTAMVisionTower, the latent adapter, the encoder wrapper and the view geometry, on tiny random models."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from conftest import KODAK_DIR, make_tiny_vit

import tiny_hosts
from cotam_llava.codec.container import parse
from cotam_llava.codec.pipeline import decode, encode
from cotam_llava.encoders import encoder_spec
from cotam_llava.errors import BitstreamFormatError, CodecMismatchError, ConfigError
from cotam_llava.imageio import to_pil
from cotam_llava.vision.adapter import LatentAdapterConfig, LatentFeatureAdapter
from cotam_llava.vision.edge import EdgeEncoder, center_square
from cotam_llava.vision.embedding_delta import embed, run_with_embedding_delta
from cotam_llava.codec.transport import pack_bitstreams, unpack_bitstreams
from cotam_llava.vision.tower import CoTAMVisionTower
from cotam_llava.vision.tower_config import CoTAMTowerConfig
from cotam_llava.vision.views import Box, sample_latent, view_boxes

KODAK = KODAK_DIR


@pytest.fixture(autouse=True)
def _kodak(kodak_dir):
    """These tests read Kodak photos: skip cleanly (conftest's fixture) when ../shared/data is absent."""


@pytest.fixture(scope="module")
def codec():
    return tiny_hosts.tiny_codec()


def _tower(codec, family: str = "clip"):
    import transformers

    from cotam_llava.models import default_tower_config

    enc = make_tiny_vit(family, layers=2, size=56).eval()
    ip = transformers.CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    host = type("Host", (), {"vision_config": enc.config})()
    cfg = default_tower_config(host, ip, codec, quality=5)
    return CoTAMVisionTower(enc, cfg, codec).eval()


# ----------------------------------------------------------------------------- adapter
def test_adapter_starts_at_zero_and_has_the_token_layout():
    cfg = LatentAdapterConfig(latent_channels=24, hidden_size=64, grid=(4, 4), num_prefix_tokens=1)
    adapter = LatentFeatureAdapter(cfg)
    assert cfg.num_heads == 1
    delta = adapter(torch.randn(2, 24, 4, 4))
    assert delta.shape == (2, 17, 64)
    assert torch.count_nonzero(delta) == 0
    torch.nn.init.normal_(adapter.proj_out.weight)
    assert adapter(torch.randn(2, 24, 4, 4)).abs().sum() > 0
    # a different grid interpolates the position embeddings
    assert adapter(torch.randn(1, 24, 6, 5)).shape == (1, 31, 64)


def test_adapter_config_validates():
    with pytest.raises(ConfigError, match="unknown adapter config keys"):
        LatentAdapterConfig.from_dict({"latent_channels": 8, "hidden_size": 64, "grid": [2, 2], "heads": 3})
    with pytest.raises(ConfigError, match="divisible"):
        LatentAdapterConfig(latent_channels=8, hidden_size=66, grid=(2, 2), num_heads=4)
    with pytest.raises(ConfigError, match="expects ŷ"):
        LatentFeatureAdapter(LatentAdapterConfig(8, 64, (2, 2)))(torch.zeros(1, 9, 2, 2))


def test_a_quality_conditioned_adapter_reads_the_level_of_each_position():
    adapter = LatentFeatureAdapter(LatentAdapterConfig(latent_channels=24, hidden_size=64, grid=(4, 4), num_qualities=10))
    torch.nn.init.normal_(adapter.proj_out.weight)
    y = torch.randn(1, 24, 4, 4)

    def delta(level: float) -> torch.Tensor:
        return adapter(torch.cat([y, torch.full((1, 1, 4, 4), level)], dim=1))

    assert not torch.allclose(delta(2), delta(7))
    # fractional levels (views that average a mixed map) interpolate the level embeddings
    assert torch.allclose(adapter._quality_tokens(torch.tensor([[2.5]]))[0, 0], adapter.quality_embedding[2:4].mean(0))
    with pytest.raises(ConfigError, match="quality plane"):
        adapter(y)


def test_a_deeper_adapter_loads_one_block_checkpoints_and_grows_from_them():
    cfg = LatentAdapterConfig(latent_channels=24, hidden_size=64, grid=(4, 4))
    one = LatentFeatureAdapter(cfg)
    torch.nn.init.normal_(one.proj_out.weight)
    y = torch.randn(2, 24, 4, 4)
    # checkpoints written before num_layers named the block "block.*"
    legacy = {k.replace("blocks.0.", "block."): v for k, v in one.state_dict().items()}
    again = LatentFeatureAdapter(cfg)
    again.load_state_dict(legacy)
    assert torch.equal(again(y), one(y))
    deeper = LatentFeatureAdapter(LatentAdapterConfig(latent_channels=24, hidden_size=64, grid=(4, 4), num_layers=3))
    missing, unexpected = deeper.load_state_dict(legacy, strict=False)
    assert not unexpected and all(k.startswith(("blocks.1.", "blocks.2.")) for k in missing)
    assert not torch.allclose(deeper(y), one(y))  # fresh blocks change the output ...
    for block in deeper.blocks[1:]:
        block.make_identity_()
    assert torch.allclose(deeper(y), one(y), atol=1e-6)  # ... identity blocks do not
    with pytest.raises(ConfigError, match="num_layers"):
        LatentAdapterConfig(latent_channels=8, hidden_size=64, grid=(2, 2), num_layers=0)


# ----------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("family, prefix", [("clip", 1), ("siglip", 0), ("internvl", 1), ("dinov2", 1), ("dinov2reg", 5)])
def test_zero_delta_reproduces_the_stock_encoder(family, prefix):
    enc = make_tiny_vit(family, layers=2, size=56).eval()
    spec = encoder_spec(enc)
    assert spec.num_prefix_tokens == prefix and spec.grid == (4, 4)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = enc(pixel_values=x, output_hidden_states=True)
        out = run_with_embedding_delta(enc, x, torch.zeros(2, prefix + 16, 32), output_hidden_states=True)
        assert embed(enc, x).shape == (2, prefix + 16, 32)
        shifted = run_with_embedding_delta(enc, x, torch.ones(2, prefix + 16, 32), output_hidden_states=True)
    assert type(out) is type(ref)
    assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
    assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, ref.hidden_states))
    assert not torch.allclose(shifted.last_hidden_state, ref.last_hidden_state)


def test_unsupported_encoder_is_rejected():
    with pytest.raises(ConfigError, match="unsupported vision encoder"):
        encoder_spec(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- views
def test_clip_geometry_is_the_centre_square():
    import transformers

    ip = transformers.CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    (box,) = view_boxes(ip, 200, 100)
    assert box.y0 == 0 and box.y1 == 100
    assert box.x0 == pytest.approx(50, abs=2) and box.x1 - box.x0 == pytest.approx(100, abs=1)


def test_anyres_boxes_match_the_host_processor_views():
    _, proc = tiny_hosts.tiny_host("onevision")

    for w, h in [(100, 60), (60, 100), (56, 56), (200, 180)]:
        n = proc.image_processor(images=[np.zeros((h, w, 3), np.uint8)], return_tensors="pt")["pixel_values"].shape[1]
        assert len(view_boxes(proc.image_processor, w, h)) == n


def test_sampling_a_latent_aligned_1_to_1_returns_it_unchanged():
    y = torch.randn(1, 5, 4, 4)
    out = sample_latent(y, [Box(0, 0, 64, 64)], (4, 4))
    assert torch.allclose(out, y, atol=1e-6)
    # a box twice the grid is area-averaged; padding reads as zero
    big = sample_latent(torch.ones(1, 5, 8, 8), [Box(0, 0, 128, 128), Box(-64, 0, 64, 128)], (4, 4))
    assert torch.allclose(big[0], torch.ones(5, 4, 4), atol=1e-6)
    assert torch.count_nonzero(big[1][..., :2]) == 0


# ----------------------------------------------------------------------------- tower
def test_bitstream_input_forms_agree_and_match_the_stock_encoder_on_the_decoded_picture(codec):
    tower = _tower(codec)
    data = EdgeEncoder(codec, tower.cotam_config).encode_image(KODAK / "kodim23.png", quality=5)
    assert parse(data).items[0].canvas_size == (64, 64)
    with torch.no_grad():
        outs = [tower(data), tower([data]), tower(parse(data)), tower(pack_bitstreams([data]))]
        picture = decode(codec, data)[0].picture
        pv = tower.image_processor(images=[to_pil(picture)], return_tensors="pt")["pixel_values"]
        ref = tower.encoder(pixel_values=pv, output_hidden_states=True)
    for out in outs:
        assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
        assert len(out.hidden_states) == len(ref.hidden_states)


def test_a_batch_of_two_pictures_of_different_sizes(codec):
    tower = _tower(codec)
    a = encode(codec, KODAK / "kodim01.png", quality=4, canvas=(128, 64))
    b = encode(codec, KODAK / "kodim23.png", quality=7)  # native resolution, padded
    with torch.no_grad():
        out = tower([a, b])
        single = tower(b)
    assert out.last_hidden_state.shape == (2, 17, 32)
    assert torch.allclose(out.last_hidden_state[1], single.last_hidden_state[0], atol=1e-5)


def test_on_the_fly_compression_gives_the_bitstreams_latent(codec):
    tower = _tower(codec)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        x_hat, y_hat = tower.simulate(image, 5)
        coded = decode(codec, encode(codec, image[0], quality=5))[0]
    assert torch.allclose(y_hat, coded.y_hat, atol=1e-4)
    assert (x_hat - coded.x_hat).abs().max() < 2 / 255  # the decoder's x̂ is rounded to 8 bits on the way
    pv = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        out = tower(pv, quality=3)
    assert out.last_hidden_state.shape == (2, 17, 32)


def test_trained_adapter_changes_the_output(codec):
    tower = _tower(codec)
    data = encode(codec, KODAK / "kodim23.png", quality=5, canvas=64)
    with torch.no_grad():
        before = tower(data).last_hidden_state
        torch.nn.init.normal_(tower.adapter.proj_out.weight, std=0.1)
        after = tower(data).last_hidden_state
    assert not torch.allclose(before, after)


def test_the_adapter_reads_the_decoded_quality_map_and_the_on_the_fly_levels(codec):
    from cotam_llava.codec.quality_map import QualityMap

    tower = _tower(codec)
    assert tower.adapter.config.num_qualities == codec.config.num_qualities
    seen: list[torch.Tensor] = []
    tower.adapter.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    qmap = QualityMap(np.array([[1, 8], [8, 1]]))
    data = encode(codec, KODAK / "kodim23.png", quality=5, quality_maps=[qmap], canvas=64)
    with torch.no_grad():
        tower(data)
        tower.encode_images(torch.rand(2, 3, 64, 64), quality=torch.tensor([2, 7]))
    (dec,) = decode(codec, data)
    assert torch.equal(seen[0][0, -1], torch.from_numpy(qmap.expand(4, 4)).float())
    assert torch.allclose(seen[0][:, :-1], dec.y_hat)  # the canvas maps ŷ 1:1 onto the patch grid
    assert seen[1][:, -1].amin(dim=(1, 2)).tolist() == [2.0, 7.0] and seen[1][:, -1].amax(dim=(1, 2)).tolist() == [2.0, 7.0]


def test_a_bitstream_from_another_codec_is_refused(codec):
    tower = _tower(codec)
    other = tiny_hosts.tiny_codec(seed=1)
    with pytest.raises(CodecMismatchError, match="made by codec"):
        tower(encode(other, KODAK / "kodim23.png", quality=5, canvas=64))


def test_packing_round_trip_and_corrupt_lengths():
    streams = [b"abc", b"", bytes(range(256))]
    packed = pack_bitstreams(streams)
    assert packed.dtype == torch.uint8 and unpack_bitstreams(packed) == streams
    packed[0, 1] = 255  # length 65 283 in a 264-byte row
    with pytest.raises(BitstreamFormatError, match="claims"):
        unpack_bitstreams(packed)


def test_tower_config_rejects_unknown_keys_and_a_codec_of_the_wrong_width(codec):
    tower = _tower(codec)
    data = tower.cotam_config.to_dict()
    with pytest.raises(ConfigError, match="unknown CoTAM tower config keys"):
        CoTAMTowerConfig.from_dict({**data, "canvas": 64})
    from cotam_llava.codec.model import CoTAMELIC

    wide = CoTAMELIC.from_preset("tiny", seed=0, M=48, groups=[8, 8, 16, 16])
    with pytest.raises(ConfigError, match="latent channels"):
        tower.set_codec(wide)


def test_edge_crops_to_the_centre_square_for_clip_style_hosts(codec):
    tower = _tower(codec)
    assert tower.cotam_config.center_crop and tower.cotam_config.canvas_size == 64
    pic = center_square(to_pil(KODAK / "kodim01.png"))
    assert pic.size == (512, 512)


def test_switches_for_ablations_and_baselines(codec):
    tower = _tower(codec)
    torch.nn.init.normal_(tower.adapter.proj_out.weight, std=0.1)
    data = encode(codec, KODAK / "kodim23.png", quality=5, canvas=64)
    pv = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        enhanced = tower(data).last_hidden_state
        tower.adapter_enabled = False
        plain = tower(data).last_hidden_state
        picture = decode(codec, data)[0].picture
        ref = tower.encoder(pixel_values=tower.image_processor(images=[to_pil(picture)], return_tensors="pt")["pixel_values"])
        tower.compress_pixels = False
        stock = tower(pv).last_hidden_state
    assert not torch.allclose(enhanced, plain)
    assert torch.equal(plain, ref.last_hidden_state)
    assert torch.equal(stock, tower.encoder(pixel_values=pv).last_hidden_state)


def test_a_variant_lasts_for_its_with_block_only_even_on_errors(codec):
    tower = _tower(codec)
    torch.nn.init.normal_(tower.adapter.proj_out.weight, std=0.1)
    data = encode(codec, KODAK / "kodim23.png", quality=5, canvas=64)
    with torch.no_grad():
        enhanced = tower(data).last_hidden_state
        with tower.variant(adapter=False, compress_pixels=False):
            plain = tower(data).last_hidden_state
        with pytest.raises(BitstreamFormatError), tower.variant(adapter=False):
            tower(b"not a bitstream")
        again = tower(data).last_hidden_state
    assert not torch.allclose(enhanced, plain) and torch.equal(enhanced, again)
    assert tower.adapter_enabled and tower.compress_pixels


def test_grid_and_canvas_follow_the_host_processor_not_the_encoder_config(codec):
    import transformers

    from cotam_llava.models import default_tower_config

    enc = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                             num_attention_heads=2, image_size=518, patch_size=14))
    ip = transformers.BitImageProcessorPil(size={"height": 224, "width": 224}, do_center_crop=False)
    cfg = default_tower_config(type("Host", (), {"vision_config": enc.config})(), ip, codec)
    tower = CoTAMVisionTower(enc, cfg, codec)
    assert tower.input_side == 224 and tower.grid == (16, 16)
    assert cfg.canvas_size == 256 and not cfg.center_crop
    assert LatentAdapterConfig.from_dict(cfg.adapter).grid == (16, 16)


def test_adapter_save_pretrained_round_trip_and_bad_weights(tmp_path):
    from cotam_llava.errors import CheckpointError
    from cotam_llava.vision.adapter import read_adapter_config

    config = LatentAdapterConfig(latent_channels=8, hidden_size=32, grid=(2, 2), num_qualities=3, num_layers=2)
    torch.manual_seed(0)
    adapter = LatentFeatureAdapter(config)
    torch.nn.init.normal_(adapter.proj_out.weight)  # a non-zero enhancement
    adapter.save_pretrained(tmp_path, {"tower": {"adapter": config.to_dict()}, "step": 7})
    loaded = LatentFeatureAdapter.from_pretrained(tmp_path)
    x = torch.cat([torch.randn(1, 8, 2, 2), torch.full((1, 1, 2, 2), 1.5)], dim=1)
    assert torch.equal(adapter(x), loaded(x)) and read_adapter_config(tmp_path)["step"] == 7
    (tmp_path / "adapter.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        LatentFeatureAdapter.from_pretrained(tmp_path)
