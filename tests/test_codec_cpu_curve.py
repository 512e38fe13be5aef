"""eval/codec_cpu_curve.py validates a run's checkpoints on held-out photos against its training time."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotam_llava.training.arguments import CodecTrainingArguments
from cotam_llava.training.codec_trainer import train_codec

from conftest import load_eval_script



def _tool():
    return load_eval_script("codec_cpu_curve")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    photos = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    run = tmp_path_factory.mktemp("run")
    train_codec(CodecTrainingArguments(
        output_dir=str(run), preset="tiny", data_dirs=[str(photos)], val_every_nth=3, crop_size=64, batch_size=1,
        max_steps=3, save_every=1, keep_checkpoints=5, val_every=0, val_qualities=[0, 9], val_max_side=64,
        log_every=1, learning_rate=1e-3), progress=False)
    return run, photos


def test_every_kept_checkpoint_is_validated_at_its_training_time(tiny_run, tmp_path):
    run, photos = tiny_run
    tool = _tool()
    out = tmp_path / "curve"
    assert tool.main([str(run), "--names", "tiny", "--every", "2", "--qualities", "0,9", "--train-data", str(photos),
                      "--val-every-nth", "3", "--val-max-side", "64", "--out", str(out)]) == 0
    records = json.loads((out / "curve.json").read_text())["records"]
    assert [r["step"] for r in records] == [1, 3]  # every 2nd checkpoint, and always the last
    logged = [float(row["sec_per_step"]) for row in csv.DictReader((run / "train_log.csv").open())]
    assert records[-1]["train_minutes"] == pytest.approx(sum(logged) / 60, abs=0.01)
    assert records[0]["train_minutes"] <= records[-1]["train_minutes"]
    assert all(r["levels"]["0"]["bpp"] < r["levels"]["9"]["bpp"] for r in records)  # real files: rate by level
    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert len(rows) == 4 and (out / "curve.png").stat().st_size > 0


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no train_log.csv"):
        _tool().main([str(tmp_path), "--out", str(tmp_path / "out")])
