"""Web-scale input (``--train_dataset``): images streamed from webdataset shards or a datasets folder."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.errors import ConfigError
from cotam_llava.training.arguments import CodecTrainingArguments
from cotam_llava.training.codec_trainer import train_codec
from cotam_llava.training.data import StreamedCrops, open_image_stream, sample_generators

N_SHARDS, PER_SHARD = 2, 4


def _colour(k: int) -> int:
    return 20 + 25 * k  # image k is the flat grey 20 + 25 k: a crop names its image


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Two webdataset shards of flat 72×80 JPEGs (+ captions), and one corrupt image in the second."""
    folder = tmp_path_factory.mktemp("shards")
    for s in range(N_SHARDS):
        with tarfile.open(folder / f"train-{s:05d}.tar", "w") as tar:
            for i in range(PER_SHARD):
                k = s * PER_SHARD + i
                buf = io.BytesIO()
                Image.fromarray(np.full((72, 80, 3), _colour(k), np.uint8)).save(buf, "PNG")
                _add(tar, f"{k:04d}.png", buf.getvalue())
                _add(tar, f"{k:04d}.txt", f"photo {k}".encode())
            if s == 1:
                _add(tar, "9999.png", b"\x89PNG\r\n\x1a\n not an image")
                _add(tar, "9999.txt", b"broken")
    return folder


def _images_of(crops: StreamedCrops, n: int, seed: int = 0) -> list[int]:
    """Which images the next ``n`` crops came from (their flat grey names them)."""
    rngs = sample_generators(seed, 0, 0, n)
    x = torch.cat([crops.batch(r, 1) for r in rngs])
    return [int(round((float(v) * 255 - 20) / 25)) for v in x.mean(dim=(1, 2, 3))]


def test_a_stream_gives_crops_of_every_image_each_epoch_and_skips_the_undecodable(shards):
    crops = StreamedCrops(open_image_stream(str(shards)), 64, seed=1, shuffle_buffer=3)
    assert crops.column == "png"
    first, second = _images_of(crops, 8), _images_of(crops, 8)
    assert sorted(first) == sorted(second) == list(range(8))  # one epoch each, the corrupt file left out
    assert first != second  # reshuffled per epoch
    x = crops.batch(np.random.default_rng(0), 2)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert crops.skipped >= 1 and crops.consumed == 8 + 8 + 2 + crops.skipped  # the corrupt item was read, not used


def test_processes_read_disjoint_shards_and_a_resumed_stream_continues_exactly(shards):
    parts = [_images_of(StreamedCrops(open_image_stream(str(shards / "*.tar")), 64, rank=r, world_size=2), 4)
             for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(8))
    for seed in range(4):  # with and without the corrupt file among the first items
        crops = StreamedCrops(open_image_stream(str(shards)), 64, seed=seed)
        _images_of(crops, 3)
        position, rest = crops.consumed, _images_of(crops, 5)
        assert _images_of(StreamedCrops(open_image_stream(str(shards)), 64, seed=seed, skip=position), 5) == rest


def test_a_datasets_image_folder_streams_too(tmp_path):
    for k in range(3):
        Image.fromarray(np.full((70, 70, 3), _colour(k), np.uint8)).save(tmp_path / f"{k}.png")
    assert sorted(_images_of(StreamedCrops(open_image_stream(str(tmp_path)), 64), 3)) == [0, 1, 2]


def test_streams_without_images_or_shards_are_our_clear_errors(tmp_path, shards):
    with pytest.raises(ConfigError, match="no webdataset shards match"):
        open_image_stream(str(tmp_path / "none-*.tar"))
    with pytest.raises(ConfigError, match="cannot stream the training dataset"):
        open_image_stream(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no image column 'jpg'.*png"):
        StreamedCrops(open_image_stream(str(shards)), 64, image_column="jpg")
    with pytest.raises(ConfigError, match="no image column"):
        StreamedCrops(open_image_stream(str(shards)), 64, image_column="txt")
    with pytest.raises(ConfigError, match="Kodak"):
        CodecTrainingArguments(output_dir="x", train_dataset="/data/kodak-shards/*.tar")
    with pytest.raises(ConfigError, match="shuffle_buffer"):
        CodecTrainingArguments(output_dir="x", shuffle_buffer=0)


def test_train_codec_on_shards_resumes_to_the_same_weights(tmp_path, shards):
    photos = tmp_path / "val"  # validation stays on held-out photos
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photos / f"v{i}.png")

    def args(out: Path, **kw) -> CodecTrainingArguments:
        return CodecTrainingArguments(output_dir=str(out), preset="tiny", data_dirs=[str(photos)], val_every_nth=1,
                                      train_dataset=str(shards), shuffle_buffer=3, crop_size=64, batch_size=2,
                                      max_steps=4, save_every=2, val_every=0, val_qualities=[0, 9], val_max_side=64,
                                      log_every=1, learning_rate=1e-3, **kw)

    straight = train_codec(args(tmp_path / "a"), progress=False)
    train_codec(args(tmp_path / "b", max_minutes=1e-9), progress=False)  # "killed" after step 1
    resumed = train_codec(args(tmp_path / "b"), progress=False)
    assert json.loads((tmp_path / "b" / "training_args.json").read_text())["train_dataset"] == str(shards)
    a = CoTAMELIC.from_pretrained(straight).canonical_state()
    b = CoTAMELIC.from_pretrained(resumed).canonical_state()
    assert all(torch.equal(a[name], b[name]) for name in a)
