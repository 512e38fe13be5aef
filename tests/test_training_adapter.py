"""Adapter training: a few steps lower the multi-level loss; a killed run resumes at the same step and state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_eval_script, make_adapter_training_folder, make_tiny_vit
from PIL import Image
from safetensors.torch import load_file

import tiny_hosts
from cotam_llava.cli import main
from cotam_llava.errors import CheckpointError, ConfigError
from cotam_llava.training.adapter_trainer import build_tower, load_encoder, train_adapter
from cotam_llava.vision.adapter import ADAPTER_WEIGHTS
from cotam_llava.training.arguments import AdapterTrainingArguments
from cotam_llava.training.data import PhotoCrops
from cotam_llava.training.losses import multi_level_loss


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    folders = make_adapter_training_folder(tmp_path_factory.mktemp("adapter"))
    tiny_hosts.tiny_codec().save_pretrained(folders["root"] / "codec")
    return {**folders, "codec": folders["root"] / "codec"}


def _args(setup, out: Path, **kw) -> AdapterTrainingArguments:
    base = dict(output_dir=str(out), codec=str(setup["codec"]), encoder=str(setup["encoder"]), data_dirs=[str(setup["photos"])],
                val_every_nth=4, batch_size=2, max_steps=4, save_every=2, val_every=0, val_qualities=[2, 8], val_images=1,
                log_every=1, learning_rate=3e-3, lr_ramp_steps=1, warmup_fraction=0.25, guidance=True)
    base.update(kw)
    return AdapterTrainingArguments(**base)


def _fixed_loss(setup, adapter_folder: Path | None) -> float:
    from cotam_llava.codec.model import CoTAMELIC

    encoder, processor = load_encoder(str(setup["encoder"]))
    tower = build_tower(encoder, processor, CoTAMELIC.from_pretrained(setup["codec"])).eval()
    if adapter_folder is not None:
        tower.adapter.load_state_dict(load_file(str(adapter_folder / ADAPTER_WEIGHTS)))
    x = PhotoCrops(sorted(setup["photos"].glob("*.png")), 64).batch(np.random.default_rng(7), 4)
    with torch.no_grad():
        ref_emb, emb = [], []
        ref = tower.encode_images(x, compress=False, capture_embeddings=ref_emb)
        out = tower.encode_images(x, 1, capture_embeddings=emb)
    return float(multi_level_loss(emb[0], out.last_hidden_state, ref_emb[0], ref.last_hidden_state, 0.1, 1.0).loss)


@pytest.mark.parametrize("relative_loss", [False, True])
def test_a_few_steps_lower_the_loss(setup, tmp_path, relative_loss):
    before = _fixed_loss(setup, None)
    final = train_adapter(_args(setup, tmp_path / "run", max_steps=30, save_every=30, relative_loss=relative_loss), progress=False)
    after = _fixed_loss(setup, final)
    assert after < 0.9 * before
    info = json.loads((final / "adapter_config.json").read_text())
    assert info["step"] == 30 and info["tower"]["canvas_size"] == 64
    rows = json.loads((final / "validation.json").read_text())["rows"]
    assert {r["quality"] for r in rows} == {2, 8} and all(r["bpp"] > 0 for r in rows)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert log[1].split(",")[4] == "0.0" and log[-1].split(",")[4] == "1.0"  # warm-up: low-level term only


def test_a_killed_run_resumes_at_the_same_step_and_state(setup, tmp_path):
    straight = train_adapter(_args(setup, tmp_path / "straight", guidance=False), progress=False)
    # "killed" after the first step: max_minutes≈0 stops right after a checkpoint at step 1
    train_adapter(_args(setup, tmp_path / "killed", guidance=False, max_minutes=1e-9), progress=False)
    resumed = train_adapter(_args(setup, tmp_path / "killed", guidance=False), progress=False)
    a, b = load_file(str(straight / ADAPTER_WEIGHTS)), load_file(str(resumed / ADAPTER_WEIGHTS))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "killed" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]


def test_the_final_token_stage_starts_with_fresh_optimizer_moments(setup, tmp_path):
    from cotam_llava.codec.model import CoTAMELIC
    from cotam_llava.training.state import latest_checkpoint, load_optimizers

    # warm-up = steps 0-1 (low-level term only), then 2 steps with the final-token term
    train_adapter(_args(setup, tmp_path / "run", guidance=False, warmup_fraction=0.5, save_every=4), progress=False)
    encoder, processor = load_encoder(str(setup["encoder"]))
    tower = build_tower(encoder, processor, CoTAMELIC.from_pretrained(setup["codec"]))
    optimizer = torch.optim.AdamW(tower.adapter.parameters())
    load_optimizers({"adapter": optimizer}, latest_checkpoint(tmp_path / "run"))
    assert {int(state["step"]) for state in optimizer.state.values()} == {2}


def test_the_relative_loss_weighs_each_sample_by_its_own_base_error():
    torch.manual_seed(0)
    target = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    base = target[0] + 0.1 * torch.randn(2, 5, 8), target[1] + torch.randn(2, 5, 8) * torch.tensor([0.1, 1.0])[:, None, None]
    same = multi_level_loss(*base, *target, 0.1, 1.0, *base)
    assert same.loss.item() == pytest.approx(1.1)  # no change from the base: λ_low + λ_high
    assert same.high.item() == pytest.approx(torch.nn.functional.mse_loss(base[1], target[1]).item())  # logs stay absolute
    # halving the error of the small-error sample counts as much as halving that of the large-error one
    better_small = base[0], torch.stack([target[1][0] + (base[1][0] - target[1][0]) / 2 ** 0.5, base[1][1]])
    better_large = base[0], torch.stack([base[1][0], target[1][1] + (base[1][1] - target[1][1]) / 2 ** 0.5])
    assert multi_level_loss(*better_small, *target, 0.1, 1.0, *base).loss.item() == pytest.approx(
        multi_level_loss(*better_large, *target, 0.1, 1.0, *base).loss.item())
    # a power below 1 weighs the small-error sample less: the same halving of it counts for less
    small, large = (multi_level_loss(*b, *target, 0.1, 1.0, *base, relative_power=0.5).loss.item()
                    for b in (better_small, better_large))
    assert large < small


def test_arguments_are_validated(setup, tmp_path):
    with pytest.raises(ConfigError, match="Kodak"):
        _args(setup, tmp_path, data_dirs=["../shared/data/kodak"])
    with pytest.raises(ConfigError, match="warmup_fraction"):
        _args(setup, tmp_path, warmup_fraction=1.0)
    with pytest.raises(ConfigError, match="--no_relative_loss"):  # the relative loss is the default
        _args(setup, tmp_path, finetune_codec=True)
    with pytest.raises(ConfigError, match="val_every"):
        _args(setup, tmp_path, val_every=-1)
    with pytest.raises(ConfigError, match="relative_power"):
        _args(setup, tmp_path, relative_power=0.0)
    assert main(["train-adapter", "--output_dir", str(tmp_path), "--codec", str(setup["codec"]),
                 "--encoder", str(tmp_path / "nowhere")]) == 1


def test_help_names_the_defaults_and_the_off_switches(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train-adapter", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert "--no_relative_loss, --no-relative-loss turn --relative_loss off --relative_power" in out
    assert "turn --resume off --max_minutes" in out and "(default: 1e-05)" in out


def test_adapter_study_tool_writes_its_report(setup, tmp_path):
    final = train_adapter(_args(setup, tmp_path / "run", max_steps=2, save_every=2), progress=False)
    tool = load_eval_script("adapter_study")
    out = tmp_path / "study"
    assert tool.main(["--adapter", str(final), "--images", str(setup["photos"]), "--limit", "2", "--qualities", "2,8",
                      "--classical", "jpeg", "--classical-qualities", "10,90", "--out", str(out), "--no-progress"]) == 0
    points = json.loads((out / "adapter_fidelity.json").read_text())["points"]
    assert {p["codec"] for p in points} == {"base", "cotam-noadapter", "cotam-noguide", "cotam", "jpeg"}
    jpeg = {p["quality"]: p for p in points if p["codec"] == "jpeg" and p["metric"] == "cosine"}
    assert jpeg[90]["bpp"] > jpeg[10]["bpp"] and jpeg[90]["value"] > jpeg[10]["value"]  # rate and fidelity rise together
    assert "| jpeg | cotam |" in (out / "adapter_fidelity.md").read_text()  # BD-rate against the classical anchor too
    assert (out / "adapter_fidelity_rd.png").stat().st_size > 0
    assert tool.main(["--adapter", str(tmp_path / "nowhere")]) == 1
    # the held-out photos of a training folder (every 4th of 4: p0.png)
    assert tool.main(["--adapter", str(final), "--images", str(setup["photos"]), "--held-out", "4", "--qualities", "2",
                      "--classical", "none", "--out", str(out / "held"), "--no-progress"]) == 0
    assert "1 photos from" in (out / "held" / "adapter_fidelity.md").read_text()
    assert tool.main(["--adapter", str(final), "--images", str(tmp_path / "nowhere"), "--held-out", "4"]) == 1
    with pytest.raises(SystemExit):
        tool.main(["--adapter", str(final), "--classical", "gif"])


def test_finetuning_the_codec_resumes_and_exports_a_finalized_codec(setup, tmp_path):
    from cotam_llava.codec.container import Container, serialize
    from cotam_llava.codec.model import CoTAMELIC
    from cotam_llava.codec.pipeline import compress_image, decode

    kw = dict(guidance=False, finetune_codec=True, relative_loss=False, codec_learning_rate=1e-3, rate_weight=10.0)
    straight = train_adapter(_args(setup, tmp_path / "straight", **kw), progress=False)
    train_adapter(_args(setup, tmp_path / "killed", max_minutes=1e-9, **kw), progress=False)
    resumed = train_adapter(_args(setup, tmp_path / "killed", **kw), progress=False)
    for name in (ADAPTER_WEIGHTS, "codec/model.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name

    info = json.loads((straight / "adapter_config.json").read_text())
    codec = CoTAMELIC.from_pretrained(straight / "codec")
    original = CoTAMELIC.from_pretrained(setup["codec"])
    assert info["codec"] == "codec" and info["finetuned_codec"] and codec.is_finalized
    assert info["codec_id"] == codec.codec_id.hex() != original.codec_id.hex()  # the weights did change
    rows = json.loads((straight / "validation.json").read_text())["rows"]  # real bitstreams of the fine-tuned codec
    assert rows and all(r["bpp"] > 0 for r in rows)
    image = np.asarray(Image.open(setup["photos"] / "p0.png"))[:64, :64]
    item, _ = compress_image(codec, image, 5)
    data = serialize(Container(codec_id=codec.codec_id, items=[item]))
    assert decode(codec, data)[0].to_pil().size == (64, 64)
    bpp_log = [line.split(",")[5] for line in (tmp_path / "straight" / "train_log.csv").read_text().splitlines()[1:]]
    assert all(float(v) > 0 for v in bpp_log)


def test_a_run_can_start_from_an_exported_adapter(setup, tmp_path):
    first = train_adapter(_args(setup, tmp_path / "first", max_steps=2, save_every=2), progress=False)
    # max_steps 1 with a zero learning rate: the export is exactly the adapter it started from
    again = train_adapter(_args(setup, tmp_path / "again", max_steps=1, save_every=1, learning_rate=1e-30,
                                init_adapter=str(first)), progress=False)
    a, b = load_file(str(first / ADAPTER_WEIGHTS)), load_file(str(again / ADAPTER_WEIGHTS))
    assert all(torch.allclose(a[k], b[k]) for k in a) and any(a[k].abs().sum() > 0 for k in a)
    # validating, a warm start is first measured as loaded (step 0), so best/ is never worse than the start
    train_adapter(_args(setup, tmp_path / "val", max_steps=1, save_every=1, val_every=1, init_adapter=str(first)),
                  progress=False)
    assert json.loads((tmp_path / "val" / "latest" / "validation.json").read_text())["step"] == 0
    assert json.loads((tmp_path / "val" / "best" / "validation.json").read_text())["step"] in (0, 1)
    assert main(["train-adapter", "--output_dir", str(tmp_path / "bad"), "--codec", str(setup["codec"]),
                 "--encoder", str(setup["encoder"]), "--init_adapter", str(setup["codec"])]) == 1


def test_a_run_grows_an_exported_adapter_by_a_block(setup, tmp_path):
    first = train_adapter(_args(setup, tmp_path / "first", max_steps=2, save_every=2), progress=False)
    # the loaded weights frozen (tiny lr scale), the added block learning: the old block stays, the new one moves
    grown = train_adapter(_args(setup, tmp_path / "grown", max_steps=2, save_every=1, warmup_fraction=0.0,
                                init_adapter=str(first), adapter_layers=2, init_adapter_lr_scale=1e-30), progress=False)
    a, b = load_file(str(first / ADAPTER_WEIGHTS)), load_file(str(grown / ADAPTER_WEIGHTS))
    assert all(torch.allclose(a[k], b[k]) for k in a)
    assert b["blocks.1.fc2.weight"].abs().sum() > 0 and b["blocks.1.fc1.weight"].shape == a["blocks.0.fc1.weight"].shape
    info = json.loads((grown / "adapter_config.json").read_text())
    assert info["tower"]["adapter"]["num_layers"] == 2
    # resuming (a "kill" after step 1) rebuilds the same two parameter groups and finishes at the same weights
    train_adapter(_args(setup, tmp_path / "killed", max_steps=2, save_every=1, warmup_fraction=0.0, max_minutes=1e-9,
                        init_adapter=str(first), adapter_layers=2, init_adapter_lr_scale=1e-30), progress=False)
    resumed = train_adapter(_args(setup, tmp_path / "killed", max_steps=2, save_every=1, warmup_fraction=0.0,
                                  init_adapter=str(first), adapter_layers=2, init_adapter_lr_scale=1e-30), progress=False)
    c = load_file(str(resumed / ADAPTER_WEIGHTS))
    assert all(torch.allclose(b[k], c[k], atol=1e-6) for k in b)
    # a deeper adapter does not fit a shallower run
    with pytest.raises(CheckpointError, match="--adapter_layers"):
        train_adapter(_args(setup, tmp_path / "shallow", max_steps=1, init_adapter=str(grown), adapter_layers=1),
                      progress=False)


def test_an_encoder_folder_without_an_image_processor_is_our_error(tmp_path):
    from cotam_llava.errors import CheckpointError
    from cotam_llava.training.adapter_trainer import load_encoder

    make_tiny_vit("dinov2", layers=2, size=56).save_pretrained(tmp_path / "vit")  # no preprocessor_config.json
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        load_encoder(str(tmp_path / "vit"))


def test_zoomed_out_crops_are_views_of_the_whole_photo_and_off_keeps_the_old_batches(tmp_path):
    ramp = np.repeat(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 256, 0), 3, 2)  # grey ramp left → right
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    native, zoomed = PhotoCrops([tmp_path / "ramp.png"], 32), PhotoCrops([tmp_path / "ramp.png"], 32, zoom_out=1.0)
    # off: exactly the windows earlier runs drew from the same generator (top, left, two flips)
    rng, check = np.random.default_rng(3), np.random.default_rng(3)
    got = native.batch(rng, 2)
    for crop in got:
        top, left = int(check.integers(225)), int(check.integers(225))
        want = ramp[top:top + 32, left:left + 32]
        want = want[:, ::-1] if check.random() < 0.5 else want
        want = want[::-1] if check.random() < 0.5 else want
        assert torch.equal(crop, torch.from_numpy(want.copy()).permute(2, 0, 1).float() / 255)
    span = lambda x: (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))) * 255  # noqa: E731
    assert float(span(native.batch(np.random.default_rng(0), 64)).max()) <= 32
    wide = span(zoomed.batch(np.random.default_rng(0), 64))
    assert float(wide.max()) > 150 and float(wide.min()) >= 30  # views up to the whole ramp, never below native


def test_validation_photos_from_another_folder_and_the_best_export(setup, tmp_path):
    choose = tmp_path / "choose"
    choose.mkdir()
    for name in ("a.png", "b.png"):
        Image.open(setup["photos"] / "p1.png").rotate(90, expand=True).save(choose / name)
    train_adapter(_args(setup, tmp_path / "run", val_dirs=[str(choose)], val_images=0, val_every=2, crop_zoom_out=0.5),
                  progress=False)
    run = tmp_path / "run"
    records = [json.loads((run / f / "validation.json").read_text()) for f in ("latest", "final", "best")]
    assert {r["image"] for r in records[1]["rows"]} == {"a.png", "b.png"}
    best = max(records[:2], key=lambda r: r["score"])  # latest: step 2, final: step 4
    assert records[2]["score"] == best["score"] and records[2]["step"] == best["step"]
    assert json.loads((run / "best" / "adapter_config.json").read_text())["step"] == best["step"]
    with pytest.raises(ConfigError, match="Kodak"):
        _args(setup, tmp_path, val_dirs=["../shared/data/kodak"])
    with pytest.raises(ConfigError, match="crop_zoom_out"):
        _args(setup, tmp_path, crop_zoom_out=1.5)
    with pytest.raises(ConfigError, match="val_images"):
        _args(setup, tmp_path, val_images=0)


def test_the_adapter_study_reuses_the_edge_files_of_its_stream_cache(setup, tmp_path, monkeypatch):
    from cotam_llava.evaluation.adapter_study import run_adapter_fidelity
    from cotam_llava.training.adapter_trainer import load_adapter_tower
    from cotam_llava.vision.edge import guidance_for
    from cotam_llava.vision.edge import EdgeEncoder

    final = train_adapter(_args(setup, tmp_path / "run", max_steps=2, save_every=2), progress=False)
    tower = load_adapter_tower(final)
    photos = sorted(setup["photos"].glob("*.png"))[:2]
    first = run_adapter_fidelity(tower, photos, [2, 8], guidance_for(tower), stream_cache=tmp_path / "cache", cache_key="a")
    assert len(list((tmp_path / "cache").glob("*.cotam"))) == 2 * 2 * 2  # photos × levels × (guided, not)
    monkeypatch.setattr(EdgeEncoder, "encode_image", lambda *a, **k: pytest.fail("the cache was not used"))
    again = run_adapter_fidelity(tower, photos, [2, 8], guidance_for(tower), stream_cache=tmp_path / "cache", cache_key="a")
    assert again == first
    with pytest.raises(pytest.fail.Exception):  # another key (e.g. another guidance encoder) codes afresh
        run_adapter_fidelity(tower, photos, [2], guidance_for(tower), stream_cache=tmp_path / "cache", cache_key="b")


def test_the_adapter_study_can_take_the_quality_conditioning_away(setup, tmp_path):
    final = train_adapter(_args(setup, tmp_path / "run", max_steps=4, save_every=4, guidance=False), progress=False)
    tool = load_eval_script("adapter_study")
    points = {}
    for blind in (False, True):
        out = tmp_path / f"study{blind}"
        assert tool.main(["--adapter", str(final), "--images", str(setup["photos"]), "--limit", "1", "--qualities", "2,8",
                          "--classical", "none", "--out", str(out), "--no-progress"] + (["--quality-blind"] if blind else [])) == 0
        points[blind] = {(p["codec"], p["quality"]): p["value"] for p in json.loads((out / "adapter_fidelity.json").read_text())["points"]
                         if p["metric"] == "cosine"}
    assert points[True][("base", 2)] == points[False][("base", 2)]  # the codec's side is untouched
    assert points[True][("cotam-noguide", 2)] != points[False][("cotam-noguide", 2)]
    assert "quality-blind adapter" in (tmp_path / "studyTrue" / "adapter_fidelity.md").read_text()
