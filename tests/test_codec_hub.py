"""A codec named by a hub id: found offline in the hub cache, and our fast error when it cannot be had."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotam_llava.cli import main
from cotam_llava.codec.loading import load_codec
from cotam_llava.errors import CheckpointError


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_codec, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_ckpt")
    tiny_codec.save_pretrained(path)
    return path


def _hub_cache(root: Path, repo_id: str, checkpoint: Path, files=("config.json", "model.safetensors")) -> Path:
    """The layout huggingface_hub leaves after a download: models--org--name/{refs/main, snapshots/<sha>/…}."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    for name in files:
        shutil.copy(checkpoint / name, snap / name)
    return root


def test_a_cached_hub_id_loads_with_no_network(tiny_checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = _hub_cache(tmp_path / "hub", "someone/cotam-codec", tiny_checkpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    codec = load_codec("someone/cotam-codec", cache_dir=cache)
    assert codec.codec_id == load_codec(tiny_checkpoint).codec_id
    # the CLI takes it as --checkpoint, through the default cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
    assert main(["encode", str(photo), "--checkpoint", "someone/cotam-codec", "-o", str(tmp_path / "p.cotam")]) == 0
    assert (tmp_path / "p.cotam").stat().st_size > 0


def test_a_hub_id_that_cannot_be_had_is_our_error_within_seconds(tiny_checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.time()
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        load_codec("someone/not-cached", cache_dir=tmp_path / "empty")
    # config cached, weights not: the download is refused offline, with our error
    cache = _hub_cache(tmp_path / "hub", "someone/half", tiny_checkpoint, files=("config.json",))
    with pytest.raises(CheckpointError, match="hub download failed"):
        load_codec("someone/half", cache_dir=cache)
    assert time.time() - started < 2
    with pytest.raises(CheckpointError, match="does not exist"):
        load_codec(str(tmp_path / "no" / "such" / "folder"))
