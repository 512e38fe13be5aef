"""CoTAMCodecConfig, CoTAMELIC: architecture, exact entropy-coding round trips, rate order,
checkpoints, and the codec-id / symbol-checksum safety nets."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cotam_llava._compressai import compressai  # noqa: F401  (shim first)
from cotam_llava.codec import pipeline
from cotam_llava.codec.configuration import CONFIG_NAME, PAPER_LAMBDAS, PRESETS, WEIGHTS_NAME, CoTAMCodecConfig
from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.errors import (
    CheckpointError,
    CodecMismatchError,
    CodecNotFinalizedError,
    ConfigError,
    SymbolMismatchError,
)


def to_x(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


def total_bytes(latent) -> int:
    return sum(len(s) for s in latent.strings)


@pytest.fixture(params=["synthetic", "kodak"])
def coded_image(request, synthetic_factory) -> np.ndarray:
    """A 128×192 (H×W) synthetic image, and a 192×256 crop of a real photo (skipped without data)."""
    if request.param == "synthetic":
        return synthetic_factory(128, 192)
    return request.getfixturevalue("kodak_image")


# ============================================================================ configuration
class TestConfig:
    def test_presets_build_valid_configs(self):
        for name in PRESETS:
            cfg = CoTAMCodecConfig.from_preset(name)
            assert cfg.preset == name
            assert sum(cfg.groups) == cfg.M
            assert cfg.lambdas == list(PAPER_LAMBDAS)

    def test_json_round_trip(self):
        cfg = CoTAMCodecConfig.from_preset("elic-small")
        again = CoTAMCodecConfig.from_dict(json.loads(cfg.to_json_string()))
        assert again == cfg
        assert again.to_json_string() == cfg.to_json_string()

    def test_unknown_key_rejected_and_named(self):
        data = CoTAMCodecConfig.from_preset("tiny").to_dict()
        data["num_heads"] = 8
        with pytest.raises(ConfigError, match="num_heads"):
            CoTAMCodecConfig.from_dict(data)
        with pytest.raises(ConfigError, match="depth"):
            CoTAMCodecConfig.from_preset("tiny", depth=3)

    def test_unknown_preset(self):
        with pytest.raises(ConfigError, match="elic-huge"):
            CoTAMCodecConfig.from_preset("elic-huge")

    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param(dict(groups=[4, 4, 8, 8]), id="groups-not-summing-to-M"),
            pytest.param(dict(groups=[4, 4, 8, 20, -4]), id="negative-group"),
            pytest.param(dict(lambdas=[0.001, 0.002]), id="lambdas-too-short"),
            pytest.param(dict(lambdas=list(PAPER_LAMBDAS) + [0.1]), id="lambdas-too-long"),
            pytest.param(dict(lambdas=list(reversed(PAPER_LAMBDAS))), id="lambdas-descending"),
            pytest.param(dict(lambdas=[0.0] + list(PAPER_LAMBDAS[1:])), id="lambda-zero"),
            pytest.param(dict(lambdas=list(PAPER_LAMBDAS[:-1]) + [float("inf")]), id="lambda-inf"),
            pytest.param(dict(N=15), id="N-odd"),
            pytest.param(dict(N=2), id="N-too-small"),
            pytest.param(dict(M=True), id="M-bool"),
            pytest.param(dict(num_qualities=17, lambdas=[0.001 * (i + 1) for i in range(17)]), id="17-qualities"),
            pytest.param(dict(num_qualities=1, lambdas=[0.001]), id="1-quality"),
            pytest.param(dict(context_hidden=[16]), id="one-context-width"),
            pytest.param(dict(num_res_blocks=17), id="too-many-res-blocks"),
            pytest.param(dict(attention="yes"), id="attention-not-bool"),
            pytest.param(dict(model_type="other-codec"), id="wrong-model-type"),
        ],
    )
    def test_bad_values_rejected(self, overrides):
        with pytest.raises(ConfigError):
            CoTAMCodecConfig.from_preset("tiny", **overrides)

    def test_config_file_not_json(self, tmp_path: Path):
        (tmp_path / CONFIG_NAME).write_text("{not json")
        with pytest.raises(ConfigError):
            CoTAMCodecConfig.load(tmp_path)

    def test_quality_index_maps_to_paper_lambdas(self):
        cfg = CoTAMCodecConfig.from_preset("tiny")
        assert cfg.lambda_for_quality(9) == min(PAPER_LAMBDAS)  # best quality: smallest λ
        assert cfg.lambda_for_quality(0) == max(PAPER_LAMBDAS)
        for q in (-1, 10, 2.5, True):
            with pytest.raises(ConfigError):
                cfg.check_quality(q)


# ============================================================================ architecture
def test_elic_preset_matches_compressai_elic2022official():
    from compressai.models import Elic2022Official

    ours = CoTAMELIC.from_preset("elic", seed=0)
    ref = Elic2022Official()
    ours_lc = {k: tuple(v.shape) for k, v in ours.latent_codec.state_dict().items()}
    ref_lc = {k: tuple(v.shape) for k, v in ref.latent_codec.state_dict().items()}
    assert ours_lc == ref_lc
    # The main transforms have the same layers in the same order (ours are split per stage).
    assert [tuple(p.shape) for p in ours.g_a.parameters()] == [tuple(p.shape) for p in ref.g_a.parameters()]
    assert [tuple(p.shape) for p in ours.g_s.parameters()] == [tuple(p.shape) for p in ref.g_s.parameters()]


def test_elic_small_checkpoint_fits_in_25_mib(tmp_path: Path):
    model = CoTAMELIC.from_preset("elic-small", seed=0)
    model.finalize()
    model.save_pretrained(tmp_path)
    size = (tmp_path / WEIGHTS_NAME).stat().st_size
    assert size <= 25 * 2**20, f"elic-small checkpoint is {size / 2**20:.2f} MiB"
    loaded = CoTAMELIC.from_pretrained(tmp_path)
    assert loaded.is_finalized and loaded.codec_id == model.codec_id


def test_seeded_construction_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = CoTAMELIC.from_preset("tiny", seed=7)
    b = CoTAMELIC.from_preset("tiny", seed=7)
    c = CoTAMELIC.from_preset("tiny", seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.codec_id == b.codec_id
    assert a.codec_id != c.codec_id
    assert len(a.codec_id) == 8


# ============================================================================ exact round trips
@pytest.mark.parametrize("quality", [0, 5, 9])
def test_latent_round_trip_is_exact_for_one_quality(tiny_codec, coded_image, quality):
    x = to_x(coded_image)
    enc = tiny_codec.compress(x, quality)
    assert len(enc.strings) == tiny_codec.stream_count()
    assert enc.y_shape == (x.shape[-2] // 16, x.shape[-1] // 16)
    dec = tiny_codec.decompress(list(enc.strings), enc.y_shape, quality)
    assert torch.equal(dec.y_hat, enc.y_hat)
    assert dec.symbol_crc == enc.symbol_crc
    assert dec.x_hat.shape == x.shape
    assert float(dec.x_hat.min()) >= 0.0 and float(dec.x_hat.max()) <= 1.0


def test_latent_round_trip_is_exact_for_a_random_quality_map(tiny_codec, coded_image):
    x = to_x(coded_image)
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    qmap = torch.from_numpy(np.random.default_rng(1234).integers(0, 10, size=(h, w)))
    enc = tiny_codec.compress(x, qmap)
    dec = tiny_codec.decompress(list(enc.strings), enc.y_shape, qmap)
    assert torch.equal(dec.y_hat, enc.y_hat)
    assert dec.symbol_crc == enc.symbol_crc
    # The map matters: decoding with another map reconstructs another latent (ŷ = ŷ' ⊙ g^ŷ_q).
    other = tiny_codec.decompress(list(enc.strings), enc.y_shape, (qmap + 1) % 10)
    assert not torch.equal(other.y_hat, enc.y_hat)


def test_constant_map_equals_scalar_quality(tiny_codec, synthetic_image):
    x = to_x(synthetic_image)
    for q in (0, 6):
        scalar = tiny_codec.compress(x, q)
        mapped = tiny_codec.compress(x, torch.full((8, 8), q))
        assert mapped.strings == scalar.strings
        assert torch.equal(mapped.y_hat, scalar.y_hat)


def test_quality_map_spends_bits_where_quality_is_high(tiny_codec, synthetic_image):
    x = to_x(synthetic_image)
    low, high = 2, 8
    mixed = torch.full((8, 8), low)
    mixed[:, 4:] = high
    rate_low = total_bytes(tiny_codec.compress(x, low))
    rate_mixed = total_bytes(tiny_codec.compress(x, mixed))
    rate_high = total_bytes(tiny_codec.compress(x, high))
    assert rate_low < rate_mixed < rate_high


@pytest.mark.parametrize("seed", [0, 1])
def test_rate_strictly_decreases_with_quality_on_a_real_photo(kodak_photo, seed):
    model = CoTAMELIC.from_preset("tiny", seed=seed)
    model.eval()
    model.finalize()
    x = to_x(kodak_photo)
    assert tuple(x.shape[-2:]) == (512, 768)
    rates = [total_bytes(model.compress(x, q)) for q in range(9, -1, -1)]
    assert all(b < a for a, b in zip(rates, rates[1:])), f"rates from q=9 down to q=0: {rates}"


class TestCompressArguments:
    def test_size_not_multiple_of_64(self, tiny_codec):
        with pytest.raises(ConfigError, match="multiples of 64"):
            tiny_codec.compress(torch.rand(1, 3, 64, 100), 5)

    def test_batch_of_two(self, tiny_codec):
        with pytest.raises(ConfigError):
            tiny_codec.compress(torch.rand(2, 3, 64, 64), 5)

    def test_quality_out_of_range(self, tiny_codec):
        with pytest.raises(ConfigError):
            tiny_codec.compress(torch.rand(1, 3, 64, 64), 10)
        with pytest.raises(ConfigError):
            tiny_codec.compress(torch.rand(1, 3, 64, 64), torch.full((4, 4), 10))

    def test_quality_map_of_the_wrong_shape(self, tiny_codec):
        with pytest.raises(ConfigError, match="latent grid"):
            tiny_codec.compress(torch.rand(1, 3, 64, 128), torch.zeros(4, 4, dtype=torch.long))

    def test_wrong_number_of_streams(self, tiny_codec, synthetic_image):
        enc = tiny_codec.compress(to_x(synthetic_image), 5)
        with pytest.raises(ConfigError, match="streams"):
            tiny_codec.decompress(list(enc.strings[:-1]), enc.y_shape, 5)


# ============================================================================ finalization
def test_unfinalized_codec_refuses_to_make_or_read_bitstreams(tiny_codec, synthetic_image):
    raw = CoTAMELIC.from_preset("tiny", seed=0)
    assert not raw.is_finalized
    x = to_x(synthetic_image)
    with pytest.raises(CodecNotFinalizedError):
        raw.compress(x, 5)
    with pytest.raises(CodecNotFinalizedError):
        pipeline.encode(raw, synthetic_image, 5)
    enc = tiny_codec.compress(x, 5)
    with pytest.raises(CodecNotFinalizedError):
        raw.decompress(list(enc.strings), enc.y_shape, 5)


def test_unfinalized_checkpoint_stays_unfinalized(tmp_path: Path, synthetic_image):
    raw = CoTAMELIC.from_preset("tiny", seed=0)
    raw.save_pretrained(tmp_path)
    loaded = CoTAMELIC.from_pretrained(tmp_path)
    assert not loaded.is_finalized and not loaded.config.finalized
    with pytest.raises(CodecNotFinalizedError):
        loaded.compress(to_x(synthetic_image), 5)


# ============================================================================ checkpoints
@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_codec, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_ckpt")
    tiny_codec.save_pretrained(path)
    return path


def test_checkpoint_round_trip_gives_identical_bitstreams(tiny_codec, tiny_checkpoint, synthetic_image):
    from cotam_llava.codec.quality_map import QualityMap

    loaded = CoTAMELIC.from_pretrained(tiny_checkpoint)
    assert not loaded.training
    assert loaded.config == tiny_codec.config
    assert loaded.codec_id == tiny_codec.codec_id
    for kwargs in (dict(quality=5), dict(quality=3, quality_maps=[QualityMap(np.array([[1, 8], [4, 9]]))])):
        assert pipeline.encode(loaded, synthetic_image, **kwargs) == pipeline.encode(tiny_codec, synthetic_image, **kwargs)
    # …and each decodes the other's streams.
    data = pipeline.encode(tiny_codec, synthetic_image, 7)
    assert torch.equal(pipeline.decode(loaded, data)[0].x_hat, pipeline.decode(tiny_codec, data)[0].x_hat)


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class TestFromPretrainedErrors:
    def test_missing_folder(self, tmp_path: Path):
        with pytest.raises(CheckpointError, match="does not exist"):
            CoTAMELIC.from_pretrained(tmp_path / "nope")

    def test_missing_weights(self, tiny_checkpoint, tmp_path: Path):
        ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
        (ckpt / WEIGHTS_NAME).unlink()
        with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
            CoTAMELIC.from_pretrained(ckpt)

    def test_missing_config(self, tiny_checkpoint, tmp_path: Path):
        ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
        (ckpt / CONFIG_NAME).unlink()
        with pytest.raises(CheckpointError, match=CONFIG_NAME):
            CoTAMELIC.from_pretrained(ckpt)

    def test_config_with_unknown_key(self, tiny_checkpoint, tmp_path: Path):
        ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
        data = json.loads((ckpt / CONFIG_NAME).read_text())
        data["use_flash_attention"] = True
        (ckpt / CONFIG_NAME).write_text(json.dumps(data))
        with pytest.raises((ConfigError, CheckpointError), match="use_flash_attention"):
            CoTAMELIC.from_pretrained(ckpt)

    @pytest.mark.parametrize("other", ["elic-small", "tiny-wider"])
    def test_weights_of_another_config(self, tiny_checkpoint, tmp_path: Path, other):
        if other == "tiny-wider":  # same layer names, different widths
            donor = CoTAMELIC.from_preset("tiny", seed=0, N=24)
        else:  # different layer names (five ŷ groups instead of four)
            donor = CoTAMELIC.from_preset(other, seed=0)
        donor.finalize()
        donor.save_pretrained(tmp_path / "donor")
        ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
        shutil.copyfile(tmp_path / "donor" / WEIGHTS_NAME, ckpt / WEIGHTS_NAME)
        with pytest.raises(CheckpointError):
            CoTAMELIC.from_pretrained(ckpt)

    def test_corrupt_weights_file(self, tiny_checkpoint, tmp_path: Path):
        ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
        (ckpt / WEIGHTS_NAME).write_bytes(b"\x00" * 7 + b"not a safetensors file")
        with pytest.raises(CheckpointError):
            CoTAMELIC.from_pretrained(ckpt)

    def test_config_claims_finalized_without_cdf_tables(self, tmp_path: Path):
        raw = CoTAMELIC.from_preset("tiny", seed=0)
        raw.save_pretrained(tmp_path)
        data = json.loads((tmp_path / CONFIG_NAME).read_text())
        data["finalized"] = True
        (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
        with pytest.raises(CheckpointError, match="finalized"):
            CoTAMELIC.from_pretrained(tmp_path)


# ============================================================================ safety nets
def test_entropy_model_drift_raises_symbol_mismatch(tiny_codec, tiny_checkpoint, synthetic_image):
    """Simulates a decoder whose entropy-model arithmetic differs from the encoder's.

    The copy is loaded from the same checkpoint, its codec id is computed (and cached)
    *before* its hyper-synthesis is perturbed, so the container's codec-id check passes
    and only the symbol checksum can catch the difference.

    Note: the perturbation is on ``h_s[0].bias``: for this untrained codec ẑ rounds to
    all zeros, so a perturbation of ``h_s[0].weight`` would change nothing at all.
    """
    data = pipeline.encode(tiny_codec, synthetic_image, 5)
    drifted = CoTAMELIC.from_pretrained(tiny_checkpoint)
    assert drifted.codec_id == tiny_codec.codec_id  # cached from here on
    pipeline.decode(drifted, data)  # before the drift it decodes
    with torch.no_grad():
        drifted.latent_codec.hyper.h_s[0].bias.add_(0.5)
    with pytest.raises(SymbolMismatchError):
        pipeline.decode(drifted, data)


def test_decoding_with_another_checkpoint_raises_codec_mismatch(tiny_codec, synthetic_image):
    other = CoTAMELIC.from_preset("tiny", seed=1)
    other.eval()
    other.finalize()
    data = pipeline.encode(tiny_codec, synthetic_image, 5)
    with pytest.raises(CodecMismatchError, match=tiny_codec.codec_id.hex()):
        pipeline.decode(other, data)


def test_codec_id_tracks_weights(tiny_codec):
    clone = copy.deepcopy(tiny_codec)
    assert clone.codec_id == tiny_codec.codec_id
    state = clone.canonical_state()
    with torch.no_grad():
        state["gain_y.gain"][3, 0] += 1e-3
    clone.load_canonical_state(state)  # load resets the cached id
    assert clone.codec_id != tiny_codec.codec_id
