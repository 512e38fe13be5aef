"""CoTAMDCAE (the second learned base): config bounds, window attention, exact entropy-coding round trips, rate
order, checkpoints through the one loader, malformed input, golden bitstreams.

The same checks as tests/test_codec_model.py and the golden test of tests/test_container.py, on the tiny
deterministic ``dcae-tiny`` preset (0.4M parameters; every test here runs in seconds on a 2-core CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cotam_llava._compressai import compressai  # noqa: F401  (shim first)
from cotam_llava.codec import pipeline
from cotam_llava.codec.configuration import CONFIG_NAME, MAX_PARAMETERS, PAPER_LAMBDAS, WEIGHTS_NAME
from cotam_llava.codec.dcae import CoTAMDCAE, WindowAttention
from cotam_llava.codec.dcae_configuration import DCAE_PRESETS, CoTAMDCAEConfig
from cotam_llava.codec.loading import ALL_PRESETS, codec_from_preset, load_codec
from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.codec.quality_map import QualityMap
from cotam_llava.errors import (
    BitstreamError,
    CheckpointError,
    CodecMismatchError,
    CodecNotFinalizedError,
    ConfigError,
    SymbolMismatchError,
)

GOLDEN_FILE = Path(__file__).resolve().parent / "golden" / "dcae.json"
GOLDEN_MAP = [[2, 7], [9, 0]]


def to_x(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


def total_bytes(latent) -> int:
    return sum(len(s) for s in latent.strings)


@pytest.fixture(scope="module")
def dcae_codec() -> CoTAMDCAE:
    """The fixed-seed, untrained ``dcae-tiny`` codec, finalized. Do not mutate."""
    model = CoTAMELIC.from_preset("dcae-tiny", seed=0)  # the ELIC entry point dispatches on the preset
    model.eval()
    model.finalize()
    return model


@pytest.fixture(scope="module")
def dcae_checkpoint(dcae_codec, tmp_path_factory) -> Path:
    return dcae_codec.save_pretrained(tmp_path_factory.mktemp("dcae_ckpt"))


@pytest.fixture(params=["synthetic", "kodak"])
def coded_image(request, synthetic_factory) -> np.ndarray:
    if request.param == "synthetic":
        return synthetic_factory(128, 192)
    return request.getfixturevalue("kodak_image")


# ============================================================================ configuration
class TestConfig:
    def test_presets(self):
        for name in DCAE_PRESETS:
            cfg = CoTAMDCAEConfig.from_preset(name)
            assert cfg.preset == name and cfg.model_type == "cotam-dcae"
            assert cfg.lambdas == list(PAPER_LAMBDAS) and cfg.M % cfg.num_slices == 0
            assert ALL_PRESETS[name] == "cotam-dcae"
        paper = CoTAMDCAEConfig.from_preset("dcae")  # the authors' DCAE(head_dim=[8,16,32,32,16,8], N=192, M=320, 5)
        assert (paper.head_dim, paper.N, paper.M, paper.num_slices, paper.dict_size) == (
            [8, 16, 32, 32, 16, 8], 192, 320, 5, 128)
        assert (paper.stage_channels, paper.stage_blocks, paper.dict_heads * paper.dict_head_dim) == (
            [96, 144, 256], [1, 2, 12], 640)

    def test_parameter_counts(self):
        assert round(CoTAMDCAEConfig.from_preset("dcae").num_parameters() / 1e6, 1) == 119.4
        assert CoTAMDCAEConfig.from_preset("dcae-small").num_parameters() < 6.3e6

    def test_json_round_trip_and_unknown_keys(self):
        cfg = CoTAMDCAEConfig.from_preset("dcae-small")
        assert CoTAMDCAEConfig.from_dict(json.loads(cfg.to_json_string())) == cfg
        data = cfg.to_dict()
        data["groups"] = [16, 16]  # an ELIC key
        with pytest.raises(ConfigError, match="groups"):
            CoTAMDCAEConfig.from_dict(data)
        with pytest.raises(ConfigError, match="dcae-huge"):
            CoTAMDCAEConfig.from_preset("dcae-huge")
        with pytest.raises(ConfigError, match="dcae-huge"):
            CoTAMELIC.from_preset("dcae-huge")

    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param(dict(M=30), id="M-not-a-multiple-of-slices"),
            pytest.param(dict(head_dim=[3, 8, 8, 8, 8, 4]), id="head-dim-not-dividing"),
            pytest.param(dict(head_dim=[4, 8, 8]), id="three-head-dims"),
            pytest.param(dict(stage_channels=[8, 16]), id="two-stages"),
            pytest.param(dict(stage_blocks=[1, 1, 17]), id="too-many-swin-blocks"),
            pytest.param(dict(window_size=0), id="window-0"),
            pytest.param(dict(window_size=True), id="window-bool"),
            pytest.param(dict(num_slices=0), id="no-slices"),
            pytest.param(dict(max_support_slices=5), id="support-beyond-slices"),
            pytest.param(dict(dict_size=10**6), id="huge-dictionary"),
            pytest.param(dict(dict_heads=64, dict_head_dim=256), id="dictionary-too-wide"),
            pytest.param(dict(hyper_head_dim=5), id="hyper-head-dim-not-dividing"),
            pytest.param(dict(M=1024, context_hidden=[1024, 1024], num_slices=16, max_support_slices=16,
                              stage_channels=[1024, 1024, 1024], head_dim=[32] * 6, stage_blocks=[16, 16, 16]),
                         id="parameter-budget"),
            pytest.param(dict(lambdas=[0.001, 0.002]), id="lambdas-too-short"),
            pytest.param(dict(model_type="cotam-elic"), id="wrong-model-type"),
            pytest.param(dict(context_hidden="wide"), id="context-not-a-list"),
        ],
    )
    def test_bad_values_rejected(self, overrides):
        with pytest.raises(ConfigError):
            CoTAMDCAEConfig.from_preset("dcae-tiny", **overrides)

    def test_budget_is_checked_without_building(self):
        with pytest.raises(ConfigError, match=f"{MAX_PARAMETERS / 1e6:.0f}M"):
            CoTAMDCAEConfig.from_preset("dcae", context_hidden=[1024, 1024], stage_blocks=[16, 16, 16],
                                        stage_channels=[1024, 1024, 1024], head_dim=[32] * 6)


# ============================================================================ window attention
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("size", [(8, 8), (6, 10), (3, 3), (1, 5)])
def test_window_attention_any_size(shifted, size):
    torch.manual_seed(0)
    attn = WindowAttention(16, 4, 4, shifted)
    x = torch.randn(2, *size, 16)
    out = attn(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(attn.relative_position_bias.grad).all()


def test_window_attention_trains_after_inference_mode():
    """Its cached index and masks are ordinary tensors even when first built under torch.inference_mode()."""
    attn = WindowAttention(8, 4, 4, True)
    x = torch.randn(1, 6, 6, 8)
    with torch.inference_mode():
        attn(x)
    attn(x).sum().backward()
    assert attn.relative_position_bias.grad is not None


@torch.no_grad()
def test_window_attention_masks_its_padding():
    """A map padded to whole windows: each window's output is that of its valid tokens alone."""
    torch.manual_seed(0)
    attn = WindowAttention(8, 4, 4, False)
    x = torch.randn(1, 8, 8, 8)
    part = attn(x[:, :6, :6])
    assert torch.allclose(part[:, :4, :4], attn(x)[:, :4, :4], atol=1e-6)  # a full window
    assert torch.allclose(part[:, 4:6, 4:6], attn(x[:, 4:6, 4:6]), atol=1e-6)  # a window of 2×2 valid tokens


@torch.no_grad()
def test_window_attention_keeps_windows_apart():
    """W-MSA stays inside its window; SW-MSA crosses the W-MSA borders, but the cyclic shift's wrap-around never
    lets one border see the opposite one (Swin's region mask)."""
    torch.manual_seed(0)
    plain, shifted = WindowAttention(8, 4, 4, False), WindowAttention(8, 4, 4, True)
    x = torch.randn(1, 8, 8, 8)

    def reach(attn, i, j):
        y = x.clone()
        y[0, i, j] += 1.0
        return ((attn(x) - attn(y)).abs().sum(-1)[0] > 1e-6).nonzero().tolist()

    assert all(r < 4 and c < 4 for r, c in reach(plain, 3, 3))
    inside = reach(shifted, 3, 3)
    assert all(2 <= r < 6 and 2 <= c < 6 for r, c in inside) and [4, 4] in inside
    assert all(r < 2 and c < 2 for r, c in reach(shifted, 0, 0))


# ============================================================================ architecture & size
def test_dcae_small_checkpoint_fits_in_25_mib(tmp_path: Path):
    model = CoTAMELIC.from_preset("dcae-small", seed=0)
    assert isinstance(model, CoTAMDCAE)
    model.finalize()
    model.save_pretrained(tmp_path)
    size = (tmp_path / WEIGHTS_NAME).stat().st_size
    assert size <= 25 * 2**20, f"dcae-small checkpoint is {size / 2**20:.2f} MiB"
    loaded = CoTAMELIC.from_pretrained(tmp_path)
    assert isinstance(loaded, CoTAMDCAE) and loaded.is_finalized and loaded.codec_id == model.codec_id


def test_seeded_construction_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = CoTAMELIC.from_preset("dcae-tiny", seed=7), codec_from_preset("dcae-tiny", seed=7)
    c = CoTAMDCAE.from_preset("dcae-tiny", seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.codec_id == b.codec_id != c.codec_id


def test_training_forward_backward_and_rate_quantizer(synthetic_image):
    model = CoTAMELIC.from_preset("dcae-tiny", seed=0)
    model.train()
    x = to_x(synthetic_image)
    qmap = torch.randint(0, 10, (1, 8, 8), generator=torch.Generator().manual_seed(0))
    out = model(x, qmap)
    assert out.x_hat.shape == x.shape and out.y_hat.shape == (1, 32, 8, 8)
    assert out.likelihoods["y"].shape == (1, 32, 8, 8) and out.likelihoods["z"].shape == (1, 16, 2, 2)
    (out.x_hat.square().mean() - out.likelihoods["y"].log().mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.latent_codec.dictionary.grad.abs().sum() > 0
    model.set_rate_quantizer("ste")
    torch.manual_seed(0)
    ste = model(x, qmap).likelihoods["y"]
    assert ste.shape == out.likelihoods["y"].shape and not torch.equal(ste, out.likelihoods["y"])
    with pytest.raises(ConfigError):
        model.set_rate_quantizer("round")


# ============================================================================ exact round trips
@pytest.mark.parametrize("quality", [0, 9])
def test_latent_round_trip_is_exact_for_one_quality(dcae_codec, coded_image, quality):
    x = to_x(coded_image)
    enc = dcae_codec.compress(x, quality)
    assert len(enc.strings) == dcae_codec.stream_count() == 5
    dec = dcae_codec.decompress(list(enc.strings), enc.y_shape, quality)
    assert torch.equal(dec.y_hat, enc.y_hat)
    assert dec.symbol_crc == enc.symbol_crc
    assert dec.x_hat.shape == x.shape and 0.0 <= float(dec.x_hat.min()) <= float(dec.x_hat.max()) <= 1.0


def test_latent_round_trip_is_exact_for_a_random_quality_map(dcae_codec, coded_image):
    x = to_x(coded_image)
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    qmap = torch.from_numpy(np.random.default_rng(1234).integers(0, 10, size=(h, w)))
    enc = dcae_codec.compress(x, qmap)
    dec = dcae_codec.decompress(list(enc.strings), enc.y_shape, qmap)
    assert torch.equal(dec.y_hat, enc.y_hat) and dec.symbol_crc == enc.symbol_crc
    other = dcae_codec.decompress(list(enc.strings), enc.y_shape, (qmap + 1) % 10)
    assert not torch.equal(other.y_hat, enc.y_hat)


def test_constant_map_equals_scalar_quality(dcae_codec, synthetic_image):
    x = to_x(synthetic_image)
    for q in (0, 6):
        assert dcae_codec.compress(x, torch.full((8, 8), q)).strings == dcae_codec.compress(x, q).strings


def test_quality_map_spends_bits_where_quality_is_high(dcae_codec, synthetic_image):
    x = to_x(synthetic_image)
    mixed = torch.full((8, 8), 2)
    mixed[:, 4:] = 8
    rates = [total_bytes(dcae_codec.compress(x, q)) for q in (2, mixed, 8)]
    assert rates[0] < rates[1] < rates[2]


def test_rate_strictly_decreases_with_quality_on_a_fresh_model(kodak_image):
    model = CoTAMELIC.from_preset("dcae-tiny", seed=1).eval()
    model.finalize()
    x = to_x(kodak_image[:128, :128])  # a 128×128 piece of a real photo
    rates = [total_bytes(model.compress(x, q)) for q in range(9, -1, -1)]
    assert all(b < a for a, b in zip(rates, rates[1:])), f"rates from q=9 down to q=0: {rates}"


def test_unfinalized_codec_refuses_bitstreams(dcae_codec, synthetic_image):
    raw = CoTAMELIC.from_preset("dcae-tiny", seed=0)
    with pytest.raises(CodecNotFinalizedError):
        pipeline.encode(raw, synthetic_image, 5)
    enc = dcae_codec.compress(to_x(synthetic_image), 5)
    with pytest.raises(CodecNotFinalizedError):
        raw.decompress(list(enc.strings), enc.y_shape, 5)


# ============================================================================ checkpoints, one loader
def test_checkpoint_round_trip_gives_identical_bitstreams(dcae_codec, dcae_checkpoint, synthetic_image):
    for loaded in (CoTAMDCAE.from_pretrained(dcae_checkpoint), CoTAMELIC.from_pretrained(dcae_checkpoint)):
        assert isinstance(loaded, CoTAMDCAE) and not loaded.training
        assert loaded.config == dcae_codec.config and loaded.codec_id == dcae_codec.codec_id  # id: every tensor
    kwargs = dict(quality=3, quality_maps=[QualityMap(np.array([[1, 8], [4, 9]]))])
    assert pipeline.encode(loaded, synthetic_image, **kwargs) == pipeline.encode(dcae_codec, synthetic_image, **kwargs)
    data = pipeline.encode(dcae_codec, synthetic_image, 7)
    assert torch.equal(pipeline.decode(loaded, data)[0].x_hat, pipeline.decode(dcae_codec, data)[0].x_hat)


def test_the_registry_and_the_elic_loader_take_a_dcae_checkpoint(dcae_checkpoint, synthetic_image, tiny_codec,
                                                                 tmp_path):
    from cotam_llava.codec.registry import get_codec

    codec = get_codec("cotam-dcae", checkpoint=dcae_checkpoint)
    assert codec.name == "cotam-dcae"
    decoded = codec.decode(codec.encode(synthetic_image, 6))
    assert decoded.shape == synthetic_image.shape
    with pytest.raises(ConfigError, match="cotam-dcae checkpoint; name it cotam-dcae instead"):
        get_codec("cotam-elic", checkpoint=dcae_checkpoint)  # a table must not call a DCAE "cotam-elic"
    elic = tiny_codec.save_pretrained(tmp_path / "elic")
    assert type(load_codec(elic)) is CoTAMELIC
    with pytest.raises(ConfigError, match="cotam-elic codec"):  # a DCAE loader refuses an ELIC checkpoint
        CoTAMDCAE.from_pretrained(elic)


def test_bench_labels_a_dcae_checkpoint_by_its_family(dcae_checkpoint, synthetic_image, tmp_path, capsys):
    from PIL import Image

    from cotam_llava.cli import main

    (tmp_path / "images").mkdir()
    Image.fromarray(synthetic_image).save(tmp_path / "images" / "a.png")
    out = tmp_path / "bench"
    assert main(["bench", str(tmp_path / "images"), "--codecs", "webp,cotam-dcae", "--checkpoint", str(dcae_checkpoint),
                 "--qualities", "cotam-dcae=2,8", "--qualities", "webp=30,80", "--out", str(out), "-q"]) == 0
    summary = (out / "bench_summary.csv").read_text()
    assert summary.count("cotam-dcae,") == 2 and "cotam-elic" not in summary
    capsys.readouterr()
    assert main(["bench", str(tmp_path / "images"), "--codecs", "cotam-elic+guidance", "--checkpoint",
                 str(dcae_checkpoint), "--out", str(tmp_path / "b2"), "-q"]) != 0
    assert "cotam-dcae checkpoint; name it cotam-dcae+guidance instead" in capsys.readouterr().err


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class TestFromPretrainedErrors:
    def test_unknown_model_type(self, dcae_checkpoint, tmp_path):
        ckpt = _copy(dcae_checkpoint, tmp_path / "ckpt")
        data = json.loads((ckpt / CONFIG_NAME).read_text())
        data["model_type"] = "cotam-vtm"
        (ckpt / CONFIG_NAME).write_text(json.dumps(data))
        with pytest.raises(ConfigError, match="cotam-vtm"):
            CoTAMELIC.from_pretrained(ckpt)

    def test_config_not_an_object(self, dcae_checkpoint, tmp_path):
        ckpt = _copy(dcae_checkpoint, tmp_path / "ckpt")
        (ckpt / CONFIG_NAME).write_text("[1, 2]")
        with pytest.raises(ConfigError):
            CoTAMELIC.from_pretrained(ckpt)

    def test_oversized_config_is_refused_before_building(self, dcae_checkpoint, tmp_path):
        ckpt = _copy(dcae_checkpoint, tmp_path / "ckpt")
        data = json.loads((ckpt / CONFIG_NAME).read_text())
        data.update(M=1024, num_slices=16, max_support_slices=16, context_hidden=[1024, 1024])
        (ckpt / CONFIG_NAME).write_text(json.dumps(data))
        with pytest.raises(ConfigError, match="parameters"):
            CoTAMELIC.from_pretrained(ckpt)

    @pytest.mark.parametrize("donor", ["tiny", "dcae-tiny-wider"])
    def test_weights_of_another_codec(self, dcae_checkpoint, tmp_path, donor):
        other = (CoTAMELIC.from_preset("tiny", seed=0) if donor == "tiny"
                 else CoTAMELIC.from_preset("dcae-tiny", seed=0, M=48, num_slices=4, max_support_slices=4))
        other.finalize()
        other.save_pretrained(tmp_path / "donor")
        ckpt = _copy(dcae_checkpoint, tmp_path / "ckpt")
        shutil.copyfile(tmp_path / "donor" / WEIGHTS_NAME, ckpt / WEIGHTS_NAME)
        with pytest.raises(CheckpointError):
            CoTAMELIC.from_pretrained(ckpt)

    def test_non_finite_weight(self, dcae_codec, tmp_path):
        from safetensors.torch import save_file

        path = dcae_codec.save_pretrained(tmp_path / "ckpt")
        state = {k: v.clone() for k, v in dcae_codec.canonical_state().items()}
        state["latent_codec.dictionary"][0, 0] = float("nan")
        save_file(state, str(path / WEIGHTS_NAME))
        with pytest.raises(CheckpointError, match="latent_codec.dictionary"):
            CoTAMELIC.from_pretrained(path)

    def test_finalized_without_tables(self, tmp_path):
        raw = CoTAMELIC.from_preset("dcae-tiny", seed=0)
        raw.save_pretrained(tmp_path)
        data = json.loads((tmp_path / CONFIG_NAME).read_text())
        data["finalized"] = True
        (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
        with pytest.raises(CheckpointError, match="finalized"):
            CoTAMELIC.from_pretrained(tmp_path)


# ============================================================================ malformed input
def test_malformed_streams_give_our_errors(dcae_codec, synthetic_image):
    from cotam_llava.evaluation.fuzz import CRAFTERS, craft_cases, decode_outcome, reference_streams

    references = reference_streams(dcae_codec)[:2]  # two pictures (the video reference only adds time here)
    outcomes = {}
    for name, data in craft_cases(references, len(CRAFTERS), seed=3):
        outcome = decode_outcome(dcae_codec, data)
        assert not outcome.startswith("bug:"), f"{name}: {outcome}"
        outcomes.setdefault(name, set()).add(outcome)
    assert any(o != {"decoded"} for o in outcomes.values())
    data = pipeline.encode(dcae_codec, synthetic_image, 5)
    for cut in (len(data) // 2, len(data) - 1):
        with pytest.raises(BitstreamError):
            pipeline.decode(dcae_codec, data[:cut])
    with pytest.raises(ConfigError, match="streams"):
        enc = dcae_codec.compress(to_x(synthetic_image), 5)
        dcae_codec.decompress(list(enc.strings[:-1]), enc.y_shape, 5)


def test_drift_raises_symbol_mismatch_and_other_codec_raises_mismatch(dcae_codec, dcae_checkpoint, synthetic_image):
    data = pipeline.encode(dcae_codec, synthetic_image, 5)
    drifted = CoTAMELIC.from_pretrained(dcae_checkpoint)
    assert drifted.codec_id == dcae_codec.codec_id  # cached before the drift
    with torch.no_grad():
        drifted.latent_codec.mean_transforms[0][0].bias.add_(0.7)
    with pytest.raises(SymbolMismatchError):
        pipeline.decode(drifted, data)
    other = CoTAMELIC.from_preset("dcae-tiny", seed=1).eval()
    other.finalize()
    with pytest.raises(CodecMismatchError, match=dcae_codec.codec_id.hex()):
        pipeline.decode(other, data)


def test_compress_arguments(dcae_codec):
    with pytest.raises(ConfigError, match="multiples of 64"):
        dcae_codec.compress(torch.rand(1, 3, 64, 100), 5)
    with pytest.raises(ConfigError):
        dcae_codec.compress(torch.rand(1, 3, 64, 64), 10)
    with pytest.raises(ConfigError, match="latent grid"):
        dcae_codec.compress(torch.rand(1, 3, 64, 128), torch.zeros(4, 4, dtype=torch.long))


# ============================================================================ golden bitstreams
def test_golden_bitstreams(dcae_codec, synthetic_image):
    """The fixed-seed dcae-tiny codec's bitstreams must not change unintentionally.

    Regenerate (after an intended format or model change) with
    ``COTAM_REGEN_GOLDEN=1 python -m pytest tests/test_dcae.py -k golden``.
    """
    streams = {
        "dcae_tiny_seed0_synthetic128_q5": pipeline.encode(dcae_codec, synthetic_image, 5),
        "dcae_tiny_seed0_synthetic128_q5_map2x2": pipeline.encode(
            dcae_codec, synthetic_image, 5, quality_maps=[QualityMap(np.array(GOLDEN_MAP))]),
    }
    current = {name: {"md5": hashlib.md5(data).hexdigest(), "bytes": len(data)} for name, data in streams.items()}
    record = {"codec_id": dcae_codec.codec_id.hex(), "quality_map": GOLDEN_MAP, "streams": current}
    if os.environ.get("COTAM_REGEN_GOLDEN") == "1":
        GOLDEN_FILE.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"COTAM_REGEN_GOLDEN=1: rewrote {GOLDEN_FILE}")
    if not GOLDEN_FILE.is_file():
        pytest.fail(f"{GOLDEN_FILE} is missing; generate it with COTAM_REGEN_GOLDEN=1")
    assert record == json.loads(GOLDEN_FILE.read_text())
    for data in streams.values():
        assert pipeline.decode(dcae_codec, data)[0].to_pil().size == (128, 128)


# ============================================================================ the rest of the system
def test_the_vision_tower_takes_a_dcae_codec(dcae_codec, kodak_photo):
    """The CoTAM tower (adapter on ŷ, M = 32 channels here) runs on a DCAE bitstream as on an ELIC one."""
    import transformers
    from conftest import make_tiny_vit

    from cotam_llava.models import default_tower_config
    from cotam_llava.vision.tower import CoTAMVisionTower

    enc = make_tiny_vit("clip", layers=2, size=56).eval()
    ip = transformers.CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    host = type("Host", (), {"vision_config": enc.config})()
    tower = CoTAMVisionTower(enc, default_tower_config(host, ip, dcae_codec, quality=5), dcae_codec).eval()
    data = pipeline.encode(dcae_codec, kodak_photo[:128, :128], 5, canvas=64)
    with torch.no_grad():
        out = tower(data)
        torch.nn.init.normal_(tower.adapter.proj_out.weight, std=0.1)
        changed = tower(data)
    assert out.last_hidden_state.shape[-1] == enc.config.hidden_size
    assert not torch.allclose(out.last_hidden_state, changed.last_hidden_state)  # the adapter reads the DCAE ŷ
