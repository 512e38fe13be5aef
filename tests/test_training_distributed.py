"""Two processes on this CPU (``torchrun --nproc_per_node 2``, gloo): what a user with several GPUs runs.

Two processes at batch b must train what one process trains at 2b (every sample of a step comes from
(seed, step, i), and DDP averages the gradients), and a streamed dataset must checkpoint where each process is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_adapter_training_folder
from safetensors.torch import load_file

import tiny_hosts
from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.vision.adapter import ADAPTER_WEIGHTS

pytestmark = pytest.mark.slow


def _launch(processes: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "-m", "cotam_llava",
           *args, "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    folders = make_adapter_training_folder(tmp_path_factory.mktemp("dist"))
    tiny_hosts.tiny_codec().save_pretrained(folders["root"] / "codec")
    return {**folders, "codec": folders["root"] / "codec"}


def test_two_adapter_processes_train_what_one_trains_at_twice_the_batch(setup, tmp_path):
    def run(processes: int, batch: int) -> dict[str, torch.Tensor]:
        out = tmp_path / f"p{processes}b{batch}"
        _launch(processes, "train-adapter", "--output_dir", str(out), "--codec", str(setup["codec"]),
                "--encoder", str(setup["encoder"]), "--data_dirs", str(setup["photos"]), "--val_every_nth", "4",
                "--batch_size", str(batch), "--max_steps", "3", "--save_every", "3", "--val_every", "0",
                "--val_qualities", "2", "--val_images", "1", "--learning_rate", "3e-3", "--lr_ramp_steps", "1",
                "--warmup_fraction", "0")
        return load_file(str(out / "final" / ADAPTER_WEIGHTS))

    one, two, half = run(1, 4), run(2, 2), run(1, 2)
    for name in one:  # the same weights, up to the order of the float sums
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=1e-4), name
    # ... and not what one process learns from its own half of the batch
    assert max(float((one[k] - half[k]).abs().max()) for k in one) > 1e-3


def test_two_codec_processes_train_what_one_trains_at_twice_the_batch(tmp_path):
    """Up to the hyperprior's quantisation noise, drawn per process (``--rate_quantizer ste`` takes it out of ŷ):
    the weights after 3 steps differ ~100× less from one process at 2b than one process at b does."""
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(photos / f"p{i}.png")

    def run(processes: int, batch: int) -> dict[str, torch.Tensor]:
        out = tmp_path / f"p{processes}b{batch}"
        _launch(processes, "train-codec", "--output_dir", str(out), "--preset", "tiny", "--data_dirs", str(photos),
                "--val_every_nth", "3", "--crop_size", "64", "--batch_size", str(batch), "--max_steps", "3",
                "--save_every", "3", "--val_every", "0", "--val_qualities", "0", "9", "--val_max_side", "64",
                "--learning_rate", "1e-3", "--rate_quantizer", "ste")
        state = CoTAMELIC.from_pretrained(out / "checkpoint-0000003" / "codec").state_dict()
        return {k: v for k, v in state.items() if v.is_floating_point() and not k.endswith("quantiles")}

    one, two, half = run(1, 4), run(2, 2), run(1, 2)

    def rms(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return float(torch.cat([(a[k] - b[k]).flatten() for k in a]).pow(2).mean().sqrt())

    assert rms(two, one) < 0.05 * rms(half, one)
    assert CoTAMELIC.from_pretrained(tmp_path / "p2b2" / "final").is_finalized


def test_two_codec_processes_stream_shards_and_resume_where_each_stopped(tmp_path):
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    shards, photos = tmp_path / "shards", tmp_path / "val"
    shards.mkdir()
    photos.mkdir()
    rng = np.random.default_rng(0)
    for s in range(2):
        with tarfile.open(shards / f"train-{s:05d}.tar", "w") as tar:
            for i in range(3):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (72, 72, 3), dtype=np.uint8)).save(buf, "PNG")
                info = tarfile.TarInfo(f"{s}-{i}.png")
                info.size = len(buf.getvalue())
                tar.addfile(info, io.BytesIO(buf.getvalue()))
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photos / f"v{i}.png")
    args = ["train-codec", "--output_dir", str(tmp_path / "run"), "--preset", "tiny", "--data_dirs", str(photos),
            "--val_every_nth", "1", "--train_dataset", str(shards), "--crop_size", "64", "--batch_size", "2",
            "--save_every", "2", "--val_every", "0", "--val_qualities", "0", "9", "--val_max_side", "64"]
    _launch(2, *args, "--max_steps", "2")
    state = json.loads((tmp_path / "run" / "checkpoint-0000002" / "trainer_state.json").read_text())
    assert state == {"step": 2, "stream_consumed": [4, 4]}  # each process read its own 4 images
    _launch(2, *args, "--max_steps", "4")  # resumes at step 2, past what each process read
    state = json.loads((tmp_path / "run" / "checkpoint-0000004" / "trainer_state.json").read_text())
    assert state == {"step": 4, "stream_consumed": [8, 8]}
    assert CoTAMELIC.from_pretrained(tmp_path / "run" / "final").is_finalized
