"""The codec shipped in checkpoints/elic-small (when present): self-describing, small, and its streams round-trip."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
import torch

from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.codec.pipeline import compress_image, decode, encode

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "elic-small"
KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"

pytestmark = pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="the shipped codec is missing")


#: the default codec, and the continuing run's best export while it is ahead of the default (the adapter is paired with elic-small)
CODECS = [c for c in (SHIPPED, SHIPPED.parent / "elic-small-next") if (c / "config.json").is_file()]


@pytest.fixture(scope="module")
def shipped() -> CoTAMELIC:
    return CoTAMELIC.from_pretrained(SHIPPED)


@pytest.fixture(scope="module", params=CODECS, ids=lambda p: p.name)
def codec_folder(request) -> Path:
    return request.param


def test_checkpoint_describes_itself_and_is_small(codec_folder):
    codec = CoTAMELIC.from_pretrained(codec_folder)
    assert codec.config.finalized and codec.config.preset == "elic-small"
    assert (codec_folder / "model.safetensors").stat().st_size <= 25 * 2**20
    assert (codec_folder / "MODEL_CARD.md").is_file()


def test_shipped_streams_round_trip_and_order_rates(codec_folder):
    from cotam_llava.imageio import psnr, to_uint8_array

    codec = CoTAMELIC.from_pretrained(codec_folder)
    path = KODAK / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    img = np.ascontiguousarray(to_uint8_array(path)[128:384, 128:512])
    sizes, quality = [], []
    for q in (0, 5, 9):
        _, latent = compress_image(codec, img, q)
        data = encode(codec, img, quality=q)
        [dec] = decode(codec, data)
        assert torch.equal(dec.y_hat, latent.y_hat)
        sizes.append(len(data))
        quality.append(psnr(to_uint8_array(dec.to_pil()), img))
    assert sizes[0] < sizes[1] < sizes[2]
    assert quality[0] < quality[1] < quality[2] and quality[0] > 20  # a trained codec: more bits, better pictures


ADAPTER = SHIPPED.parent / "adapter-dinov2"


@pytest.mark.skipif(not (ADAPTER / "adapter_config.json").is_file(), reason="no adapter is shipped")
def test_shipped_adapter_pairs_with_the_shipped_codec_and_loads(shipped):
    from safetensors.torch import load_file

    from cotam_llava.vision.adapter import ADAPTER_WEIGHTS, adapter_codec_path, read_adapter_config
    from cotam_llava.vision.adapter import LatentAdapterConfig, LatentFeatureAdapter

    info = read_adapter_config(ADAPTER)
    assert info["encoder"] == "dinov2-imgfocus" and not info["finetuned_codec"]
    assert info["codec_id"] == shipped.codec_id.hex() and adapter_codec_path(ADAPTER, info) == Path("checkpoints/elic-small")
    adapter = LatentFeatureAdapter(LatentAdapterConfig.from_dict(info["tower"]["adapter"]))
    adapter.load_state_dict(load_file(str(ADAPTER / ADAPTER_WEIGHTS)))  # strict: every key and shape
    assert adapter.config.latent_channels == shipped.config.M and adapter.config.num_qualities == shipped.config.num_qualities
    assert adapter.proj_out.weight.abs().sum() > 0  # trained: the output projection starts at zero
    assert (ADAPTER / "MODEL_CARD.md").is_file()


HEVC_ADAPTER = SHIPPED.parent / "adapter-dinov2-hevc"


@pytest.mark.skipif(not (HEVC_ADAPTER / "adapter_config.json").is_file(), reason="no hevc adapter is shipped")
def test_shipped_hevc_adapter_reads_pixels_and_names_the_hevc_base():
    from cotam_llava.codec.loading import is_standard_codec, load_codec
    from cotam_llava.vision.adapter import LatentFeatureAdapter, adapter_codec_path, read_adapter_config

    info = read_adapter_config(HEVC_ADAPTER)
    assert info["encoder"] == "dinov2-imgfocus" and info["codec"] == "hevc"
    codec = load_codec(adapter_codec_path(HEVC_ADAPTER, info))
    assert is_standard_codec(codec) and codec.codec_id.hex() == info["codec_id"]  # the locked PyAV / x265 build
    adapter = LatentFeatureAdapter.from_pretrained(HEVC_ADAPTER)  # strict: every key and shape
    assert adapter.config.reads_pixels and adapter.config.stem == "patch" and adapter.config.num_qualities == 10
    assert adapter.proj_out.weight.abs().sum() > 0
    # calibrated per level on `choose` (cotam calibrate-adapter): its table ships beside it and matches the config
    table = json.loads((HEVC_ADAPTER / "calibration.json").read_text())
    assert list(adapter.config.level_scale) == table["level_scale"] and len(table["level_scale"]) == 10
    assert (HEVC_ADAPTER / "MODEL_CARD.md").is_file()
