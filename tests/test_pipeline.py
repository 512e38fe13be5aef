"""Images → ``.cotam`` bytes → images, through the edge/cloud pipeline and the LearnedCodec wrapper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cotam_llava.codec import pipeline
from cotam_llava.codec.container import ResizeMode, parse
from cotam_llava.codec.quality_map import QualityMap
from cotam_llava.codec.registry import ImageCodec, LearnedCodec, get_codec
from cotam_llava.errors import ConfigError, ImageInputError


def test_several_sizes_in_one_container(tiny_codec, synthetic_factory):
    a = synthetic_factory(70, 100)  # 100 wide, 70 high
    b = synthetic_factory(128, 64)  # 64 wide, 128 high
    data = pipeline.encode(tiny_codec, [a, b], quality=4)
    assert len(parse(data).items) == 2
    decoded = pipeline.decode(tiny_codec, data)
    assert [d.to_pil().size for d in decoded] == [(100, 70), (64, 128)]
    assert [d.item.canvas_size for d in decoded] == [(128, 128), (64, 128)]
    assert [d.item.resize_mode for d in decoded] == [ResizeMode.PAD, ResizeMode.PAD]
    assert tuple(decoded[0].x_hat.shape) == (1, 3, 128, 128)
    assert tuple(decoded[0].y_hat.shape) == (1, tiny_codec.config.M, 8, 8)
    assert tuple(decoded[1].y_hat.shape) == (1, tiny_codec.config.M, 8, 4)
    assert all((d.quality == 4).all() for d in decoded)
    assert [d.item.is_video_frame for d in decoded] == [False, False]
    # Each item decodes to exactly the latent the encoder quantized.
    for image, dec in zip((a, b), decoded):
        _, latent = pipeline.compress_image(tiny_codec, image, 4)
        assert torch.equal(dec.y_hat, latent.y_hat)


def test_a_single_image_needs_no_list(tiny_codec, synthetic_image):
    one = pipeline.encode(tiny_codec, synthetic_image, 3)
    assert one == pipeline.encode(tiny_codec, [synthetic_image], 3)
    assert len(pipeline.decode(tiny_codec, one)) == 1


def test_other_input_types_give_the_same_stream(tiny_codec, synthetic_image, tmp_path: Path):
    path = tmp_path / "img.png"
    Image.fromarray(synthetic_image).save(path)
    reference = pipeline.encode(tiny_codec, synthetic_image, 5)
    assert pipeline.encode(tiny_codec, str(path), 5) == reference
    assert pipeline.encode(tiny_codec, path, 5) == reference
    assert pipeline.encode(tiny_codec, Image.fromarray(synthetic_image), 5) == reference


def test_resize_canvas_round_trip(tiny_codec, synthetic_factory):
    image = synthetic_factory(70, 100)
    data = pipeline.encode(tiny_codec, image, 6, canvas=128)
    (dec,) = pipeline.decode(tiny_codec, data)
    assert dec.item.resize_mode == ResizeMode.RESIZE
    assert dec.item.canvas_size == (128, 128)
    assert dec.item.orig_size == (100, 70)
    assert tuple(dec.x_hat.shape) == (1, 3, 128, 128)
    assert dec.to_pil().size == (100, 70)
    # A (width, height) canvas works too.
    (dec2,) = pipeline.decode(tiny_codec, pipeline.encode(tiny_codec, image, 6, canvas=(192, 64)))
    assert dec2.item.canvas_size == (192, 64) and tuple(dec2.x_hat.shape) == (1, 3, 64, 192)
    assert dec2.to_pil().size == (100, 70)


def test_quality_maps_round_trip_and_reach_the_decoder(tiny_codec, synthetic_factory):
    images = [synthetic_factory(128, 128), synthetic_factory(64, 128)]
    maps = [QualityMap(np.array([[1, 8], [8, 1]])), None]
    data = pipeline.encode(tiny_codec, images, 5, quality_maps=maps, video=True)
    decoded = pipeline.decode(tiny_codec, data)
    assert decoded[0].item.quality_map == maps[0]
    np.testing.assert_array_equal(decoded[0].quality, maps[0].expand(8, 8))
    assert decoded[1].item.quality_map is None and (decoded[1].quality == 5).all()
    assert [d.item.is_video_frame for d in decoded] == [True, True]
    assert parse(data).items[0].map_bits == 8 * len(maps[0].to_bytes())


class TestEncodeArguments:
    def test_quality_maps_length_mismatch(self, tiny_codec, synthetic_image):
        with pytest.raises(ConfigError, match="2 quality maps for 1 images"):
            pipeline.encode(tiny_codec, [synthetic_image], 5, quality_maps=[None, None])
        with pytest.raises(ConfigError):
            pipeline.encode(tiny_codec, [synthetic_image, synthetic_image], 5, quality_maps=[])

    @pytest.mark.parametrize("canvas", [100, 0, -64, (128, 96), (64, 0)])
    def test_canvas_not_a_positive_multiple_of_64(self, tiny_codec, synthetic_image, canvas):
        with pytest.raises(ConfigError, match="multiples of 64"):
            pipeline.encode(tiny_codec, synthetic_image, 5, canvas=canvas)

    @pytest.mark.parametrize("quality", [-1, 10, 2.5])
    def test_quality_out_of_range(self, tiny_codec, synthetic_image, quality):
        with pytest.raises(ConfigError):
            pipeline.encode(tiny_codec, synthetic_image, quality)

    def test_quality_map_beyond_the_codec_levels(self, tiny_codec, synthetic_image):
        with pytest.raises(ConfigError, match="level 12"):
            pipeline.encode(tiny_codec, synthetic_image, 5, quality_maps=[QualityMap(np.array([[1, 12]]))])

    def test_bad_images(self, tiny_codec, tmp_path: Path):
        with pytest.raises(ImageInputError):
            pipeline.encode(tiny_codec, [], 5)
        with pytest.raises(ImageInputError):
            pipeline.encode(tiny_codec, tmp_path / "missing.png", 5)
        with pytest.raises(ImageInputError):
            pipeline.encode(tiny_codec, np.zeros((64, 64, 3), np.float64), 5)


def test_learned_codec_reports_where_the_bits_went(tiny_codec, synthetic_factory):
    codec = LearnedCodec(tiny_codec)
    assert isinstance(codec, ImageCodec)
    assert codec.default_qualities == tuple(range(10))
    image = synthetic_factory(70, 100)
    data = codec.encode(image, 5)
    stats = codec.coding_stats(image, 5)
    assert set(stats) == {"payload_bits", "estimated_bits", "header_bits", "map_bits"}
    item = parse(data).items[0]
    assert stats["payload_bits"] == 8 * item.payload_bytes > 0
    assert stats["payload_bits"] + stats["header_bits"] == 8 * len(data)
    assert stats["map_bits"] == 0
    # The real rANS rate is close to the model's estimate (within 30 %).
    assert 0.7 * stats["estimated_bits"] < stats["payload_bits"] < 1.3 * stats["estimated_bits"]
    assert codec.encode(image, 5) == data  # deterministic
    decoded = codec.decode(data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    # Rates of the wrapper follow the quality too.
    assert len(codec.encode(image, 1)) < len(data) < len(codec.encode(image, 9))


def test_learned_codec_with_a_canvas(tiny_codec, synthetic_factory):
    codec = LearnedCodec(tiny_codec, canvas=64)
    image = synthetic_factory(70, 100)
    data = codec.encode(image, 5)
    assert parse(data).items[0].canvas_size == (64, 64)
    assert codec.decode(data).shape == image.shape


def test_get_codec_loads_a_learned_checkpoint(tiny_codec, synthetic_image, tmp_path: Path):
    tiny_codec.save_pretrained(tmp_path)
    codec = get_codec("cotam-elic", checkpoint=tmp_path)
    assert isinstance(codec, LearnedCodec)
    assert codec.encode(synthetic_image, 5) == pipeline.encode(tiny_codec, synthetic_image, 5)
