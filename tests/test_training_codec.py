"""Codec training: a few steps lower the loss; a killed run resumes to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.errors import ConfigError
from cotam_llava.training.arguments import CodecTrainingArguments
from cotam_llava.training.codec_trainer import train_codec
from cotam_llava.training.data import PhotoCrops, sample_generators, sample_quality_maps
from cotam_llava.training.losses import rate_distortion_loss


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    for i in range(3):
        smooth = np.stack([(x * (i + 1)) % 256, (y * 2) % 256, ((x + y) // 2) % 256], axis=-1)
        img = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"p{i}.png")
    return folder


def _args(out: Path, data: Path, **kw) -> CodecTrainingArguments:
    base = dict(output_dir=str(out), preset="tiny", data_dirs=[str(data)], val_every_nth=3, crop_size=64,
                batch_size=2, max_steps=4, save_every=2, val_every=0, val_qualities=[0, 9], val_max_side=64,
                log_every=1, learning_rate=1e-3)
    base.update(kw)
    return CodecTrainingArguments(**base)


def _fixed_loss(model: CoTAMELIC, data: Path) -> float:
    crops = PhotoCrops(sorted(data.glob("*.png")), 64)
    rng = np.random.default_rng(123)
    x = crops.batch(rng, 4)
    qmap = sample_quality_maps(rng, 4, (4, 4), 10, 0.5)
    lambdas = torch.tensor([model.config.lambda_for_quality(q) for q in range(10)])
    model.eval()
    with torch.no_grad():
        return float(rate_distortion_loss(model(x, qmap), x, lambdas, qmap).loss)


def test_a_few_steps_lower_the_loss(tmp_path, photo_dir):
    init = tmp_path / "init"
    CoTAMELIC.from_preset("tiny", seed=0).save_pretrained(init)
    before = _fixed_loss(CoTAMELIC.from_pretrained(init), photo_dir)
    final = train_codec(_args(tmp_path / "run", photo_dir, init_checkpoint=str(init), max_steps=40, save_every=40,
                              map_probability=0.5), progress=False)
    after = _fixed_loss(CoTAMELIC.from_pretrained(final), photo_dir)
    assert after < 0.7 * before
    # The export is finalized and codes real bitstreams; validation used them.
    assert CoTAMELIC.from_pretrained(final).config.finalized
    rows = json.loads((final / "validation.json").read_text())["rows"]
    assert {r["quality"] for r in rows} == {0, 9} and all(r["bpp"] > 0 for r in rows)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss") and len(log) == 41
    # The starting point is validated too, each validation's BD-rate against WebP is logged, and best/ holds
    # the export with the lowest one (none while every BD-rate is undefined).
    bd = [line.split(",") for line in (tmp_path / "run" / "val_bdrate.csv").read_text().splitlines()[1:]]
    assert [int(step) for step, _ in bd] == [0, 40]
    finite = [float(v) for _, v in bd if np.isfinite(float(v))]
    best = tmp_path / "run" / "best" / "validation.json"
    assert best.is_file() == bool(finite)
    if finite:
        assert json.loads(best.read_text())["bd_rate_vs_webp"] == pytest.approx(min(finite), abs=1e-3)
        assert CoTAMELIC.from_pretrained(best.parent).config.finalized


def test_resume_after_a_kill_reaches_the_same_weights(tmp_path, photo_dir):
    straight = train_codec(_args(tmp_path / "a", photo_dir), progress=False)
    # "Killed" after the first step: max_minutes≈0 stops right after a checkpoint at step 1.
    stopped = train_codec(_args(tmp_path / "b", photo_dir, max_minutes=1e-9), progress=False)
    assert json.loads((tmp_path / "b" / "checkpoint-0000001" / "trainer_state.json").read_text())["step"] == 1
    # the time limit exports the step it stopped at, even with val_every=0 (it used to return a latest/ never written)
    assert stopped == tmp_path / "b" / "latest" and json.loads((stopped / "validation.json").read_text())["step"] == 1
    assert CoTAMELIC.from_pretrained(stopped).config.finalized
    resumed = train_codec(_args(tmp_path / "b", photo_dir), progress=False)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "b" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]  # the log continues where the checkpoint was, without repeats
    a = CoTAMELIC.from_pretrained(straight).canonical_state()
    b = CoTAMELIC.from_pretrained(resumed).canonical_state()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_multi_scale_crops_train_and_resume_exactly(tmp_path, photo_dir):
    """--crop_zoom_out (multi-scale sampling) changes what the codec sees, and a killed run still resumes bit for bit."""
    native = train_codec(_args(tmp_path / "native", photo_dir, max_steps=2), progress=False)
    zoom = dict(crop_zoom_out=1.0, max_steps=2)
    straight = train_codec(_args(tmp_path / "a", photo_dir, **zoom), progress=False)
    train_codec(_args(tmp_path / "b", photo_dir, max_minutes=1e-9, **zoom), progress=False)
    resumed = train_codec(_args(tmp_path / "b", photo_dir, **zoom), progress=False)
    n, a, b = (CoTAMELIC.from_pretrained(p).canonical_state() for p in (native, straight, resumed))
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], n[name]) for name in a)  # other crops, other weights
    assert json.loads((tmp_path / "a" / "training_args.json").read_text())["crop_zoom_out"] == 1.0
    with pytest.raises(ConfigError, match="crop_zoom_out"):
        CodecTrainingArguments(output_dir=str(tmp_path), crop_zoom_out=1.5)


def test_the_learning_rate_ramps_up_from_the_start(tmp_path, photo_dir):
    train_codec(_args(tmp_path / "run", photo_dir, lr_ramp_steps=4, max_steps=10, save_every=10, lr_decay_at=[0.8]),
                progress=False)
    lrs = [float(line.split(",")[6]) for line in (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4])  # then the ×0.1 drop
    with pytest.raises(ConfigError, match="lr_ramp_steps"):
        CodecTrainingArguments(output_dir=str(tmp_path), lr_ramp_steps=-1)


def test_the_weight_average_is_what_is_exported_and_it_resumes_exactly(tmp_path, photo_dir):
    from safetensors.torch import load_file

    kw = dict(ema_decay=0.5, val_every=2)
    straight = train_codec(_args(tmp_path / "a", photo_dir, **kw), progress=False)
    last = tmp_path / "a" / "checkpoint-0000004"
    average = load_file(str(last / "ema.safetensors"))
    exported = dict(CoTAMELIC.from_pretrained(straight).named_parameters())
    trained = dict(CoTAMELIC.from_pretrained(last / "codec").named_parameters())
    assert average.keys() == exported.keys() == trained.keys()
    assert all(torch.equal(average[n], exported[n].detach()) for n in average)  # final/ holds the average ...
    assert not all(torch.equal(average[n], trained[n].detach()) for n in average)  # ... not the training weights
    raw = [line.split(",")[0] for line in (tmp_path / "a" / "val_bdrate_raw.csv").read_text().splitlines()]
    ema = [line.split(",")[0] for line in (tmp_path / "a" / "val_bdrate.csv").read_text().splitlines()]
    assert raw == ema == ["step", "2", "4"]  # both validated at every validation
    # killed after step 1 and resumed: the same average, bit for bit
    train_codec(_args(tmp_path / "b", photo_dir, max_minutes=1e-9, **kw), progress=False)
    train_codec(_args(tmp_path / "b", photo_dir, **kw), progress=False)
    resumed = load_file(str(tmp_path / "b" / "checkpoint-0000004" / "ema.safetensors"))
    assert all(torch.equal(average[n], resumed[n]) for n in average)
    with pytest.raises(ConfigError, match="ema_decay"):
        CodecTrainingArguments(output_dir=str(tmp_path), ema_decay=1.0)


def test_arguments_refuse_kodak_and_bad_crops(tmp_path):
    with pytest.raises(ConfigError, match="Kodak"):
        CodecTrainingArguments(output_dir=str(tmp_path), data_dirs=["../shared/data/kodak"])
    with pytest.raises(ConfigError, match="crop_size"):
        CodecTrainingArguments(output_dir=str(tmp_path), crop_size=100)


def test_quality_maps_cover_levels_and_stay_in_range():
    maps = sample_quality_maps(np.random.default_rng(0), 64, (8, 8), 10, 1.0)
    assert maps.shape == (64, 8, 8) and int(maps.min()) >= 0 and int(maps.max()) <= 9
    assert sum(len(torch.unique(m)) > 1 for m in maps) > 32  # most samples are non-uniform maps


def test_ste_rate_is_the_rate_of_the_rounded_latent_and_trains_the_encoder():
    """With rate_quantizer='ste' the training-mode rate of ŷ is exactly the eval-mode (rounded) one, and it still
    has gradients for the analysis transform; with 'noise' it differs. Inference is unchanged by the switch."""
    torch.manual_seed(0)
    model = CoTAMELIC.from_preset("tiny", seed=0)
    x = torch.rand(2, 3, 128, 128)
    model.eval()
    with torch.no_grad():
        rounded = model(x, 5).likelihoods["y"]
    model.train()
    noisy = model(x, 5).likelihoods["y"]
    assert not torch.allclose(noisy, rounded)
    model.set_rate_quantizer("ste")
    ste = model(x, 5).likelihoods["y"]
    assert torch.allclose(ste, rounded, rtol=1e-5, atol=1e-7)
    (-ste.log2().sum()).backward()
    assert model.g_a[0][0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, 5).likelihoods["y"], rounded)
    with pytest.raises(ConfigError, match="rate_quantizer"):
        CodecTrainingArguments(output_dir="x", rate_quantizer="round")


def test_n_processes_see_the_data_of_one_process_at_n_times_the_batch(photo_dir):
    """Sample i of a step comes from (seed, step, i): two processes × 2 samples = one process × 4, and resume-safe."""
    crops = PhotoCrops(sorted(photo_dir.glob("*.png")), 64)

    def share(rank: int, per_process: int, step: int = 5):
        rngs = sample_generators(3, step, rank, per_process)
        x = torch.cat([crops.batch(r, 1) for r in rngs])
        qmap = torch.cat([sample_quality_maps(r, 1, (4, 4), 10, 0.5) for r in rngs])
        return x, qmap

    x_one, q_one = share(0, 4)
    parts = [share(rank, 2) for rank in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x_one)
    assert torch.equal(torch.cat([p[1] for p in parts]), q_one)
    assert not torch.equal(share(0, 4, step=6)[0], x_one)  # another step, other data


def test_compiled_transforms_train_like_eager_and_resume_exactly(tmp_path, photo_dir):
    """--compile: the same losses as eager and a killed run resumes to the same weights (both to float rounding);
    exports stay eager."""
    eager = train_codec(_args(tmp_path / "eager", photo_dir, max_steps=3), progress=False)
    straight = train_codec(_args(tmp_path / "a", photo_dir, max_steps=3, compile=True), progress=False)
    train_codec(_args(tmp_path / "b", photo_dir, max_steps=3, compile=True, max_minutes=1e-9), progress=False)
    resumed = train_codec(_args(tmp_path / "b", photo_dir, max_steps=3, compile=True), progress=False)

    def losses(run: Path) -> list[float]:
        return [float(line.split(",")[1]) for line in (run / "train_log.csv").read_text().splitlines()[1:]]

    assert losses(tmp_path / "a") == pytest.approx(losses(tmp_path / "eager"), rel=1e-3)
    # a resumed run compiles again; inductor's kernels then match to float rounding, not always bit for bit
    a, b = (CoTAMELIC.from_pretrained(p).canonical_state() for p in (straight, resumed))
    assert all(torch.allclose(a[name].float(), b[name].float(), rtol=1e-5, atol=1e-7) for name in a)
    codec = CoTAMELIC.from_pretrained(straight)
    assert "analysis" not in vars(codec) and CoTAMELIC.from_pretrained(eager).config.finalized
