"""Training data for the codec: random crops of photo folders, and random quality maps.

Every batch is a pure function of ``(seed, step, process)``: a killed run resumes
with exactly the batches it would have seen, with no sampler state to save.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ImageInputError
from ..imageio import IMAGE_SUFFIXES, to_uint8_array

__all__ = [
    "PhotoCrops", "StreamedCrops", "open_image_stream", "photo_files", "random_crop", "sample_quality_maps", "split_files",
    "stream_position", "training_crops",
]


def photo_files(folders: Sequence[str | Path]) -> list[Path]:
    """All images under ``folders`` (recursive, sorted, each once); a clear error for a missing folder or none."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ImageInputError(f"photo folder not found: {folder}")
        files += [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise ImageInputError(f"no images under {', '.join(map(str, folders))}")
    return sorted(set(files))


def split_files(folders: Sequence[str | Path], val_every_nth: int) -> tuple[list[Path], list[Path]]:
    """All images under ``folders`` (recursive, sorted); every n-th goes to validation."""
    files = photo_files(folders)
    if len(files) < 2:
        raise ImageInputError(f"need at least 2 training images under {', '.join(map(str, folders))}")
    val = files[::val_every_nth]
    train = [f for f in files if f not in set(val)]
    return train, val


@dataclass
class PhotoCrops:
    """Random crops (with flips) of photos held in memory as uint8 arrays.

    Args:
        files: image files; smaller than the crop side ones are upscaled to fit.
        crop: crop side in pixels.
        zoom_out: share of crops that are *views* instead of native-scale windows: a square of side s drawn
            log-uniformly between ``crop`` and the photo's short side, resized to ``crop`` (bicubic, as the pipeline
            resizes a picture to the canvas). At s = short side it is the picture a user sends: the whole centre
            square at the canvas. 0 (default): native-scale crops only, the batches of earlier runs unchanged.
    """

    files: Sequence[Path]
    crop: int
    zoom_out: float = 0.0

    def __post_init__(self) -> None:
        self.images: list[np.ndarray] = [fit_to_crop(to_uint8_array(path), self.crop) for path in self.files]

    def batch(self, rng: np.random.Generator, size: int) -> Tensor:
        """(size, 3, crop, crop) float in [0, 1]."""
        return _stack([random_crop(self.images[int(rng.integers(len(self.images)))], rng, self.crop, self.zoom_out)
                       for _ in range(size)])


def fit_to_crop(img: np.ndarray, crop: int) -> np.ndarray:
    """``img`` upscaled (bicubic) so that its short side is at least ``crop``; unchanged when it already is."""
    from PIL import Image

    h, w = img.shape[:2]
    if min(h, w) >= crop:
        return img
    scale = crop / min(h, w)
    return np.asarray(Image.fromarray(img).resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BICUBIC))


def random_crop(img: np.ndarray, rng: np.random.Generator, crop: int, zoom_out: float = 0.0) -> np.ndarray:
    """A random ``crop``² window of ``img`` (short side ≥ ``crop``), randomly flipped; with probability ``zoom_out``
    a view instead (see :class:`PhotoCrops`)."""
    h, w = img.shape[:2]
    side = crop
    if zoom_out and min(h, w) > crop and rng.random() < zoom_out:
        side = int(round(np.exp(rng.uniform(np.log(crop), np.log(min(h, w))))))
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    patch = img[top:top + side, left:left + side]
    if side != crop:
        from PIL import Image

        patch = np.asarray(Image.fromarray(patch).resize((crop, crop), Image.BICUBIC))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[::-1]
    return patch


def _stack(patches: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float().div_(255.0)


def sample_generators(seed: int, step: int, rank: int, per_process: int) -> list[np.random.Generator]:
    """One generator per sample of this process's share of a step's global batch.

    Sample ``i`` of step ``s`` is drawn from ``(seed, s, i)`` whatever the number of processes, so N processes
    with ``per_process`` samples each see exactly the data one process sees with N·``per_process`` (rank r takes
    samples r·per_process … (r+1)·per_process − 1), and a resumed run sees what an uninterrupted one saw.
    """
    first = rank * per_process
    return [np.random.default_rng([seed, step, first + i]) for i in range(per_process)]


def sample_quality_maps(
    rng: np.random.Generator, batch: int, grid: tuple[int, int], num_qualities: int, map_probability: float
) -> Tensor:
    """Per-sample quality maps on the latent grid, (batch, h, w) long.

    Each sample gets a base level; with ``map_probability`` it gets instead one of:
    random patches (a coarse grid of base−s / base / base+s, as guidance produces), or a
    linear gradient between two levels. Levels are clamped to [0, num_qualities − 1].
    """
    h, w = grid
    maps = np.empty((batch, h, w), dtype=np.int64)
    for i in range(batch):
        base = int(rng.integers(num_qualities))
        kind = "uniform" if rng.random() >= map_probability else ("patches" if rng.random() < 0.6 else "gradient")
        if kind == "uniform":
            maps[i] = base
        elif kind == "patches":
            cells = int(rng.integers(2, 9))
            step = int(rng.integers(1, 4))
            coarse = base + step * rng.integers(-1, 2, size=(cells, cells))
            rows = (np.arange(h) * cells) // h
            cols = (np.arange(w) * cells) // w
            maps[i] = coarse[rows[:, None], cols[None, :]]
        else:
            other = int(rng.integers(num_qualities))
            t = np.linspace(0.0, 1.0, w if rng.random() < 0.5 else h)
            ramp = np.rint(base + (other - base) * t).astype(np.int64)
            maps[i] = ramp[None, :] if ramp.size == w else ramp[:, None]
    return torch.from_numpy(np.clip(maps, 0, num_qualities - 1))


def _decode_bytes(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3) of encoded image bytes, with the same pixel cap as files; ImageInputError when undecodable."""
    import io

    from PIL import Image, UnidentifiedImageError

    from ..imageio import MAX_IMAGE_PIXELS

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ImageInputError(f"{img.width}×{img.height} exceeds {MAX_IMAGE_PIXELS} pixels")
            return to_uint8_array(img)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"undecodable image: {exc}") from exc


def open_image_stream(spec: str, split: str = "train"):
    """A streamed ``datasets.IterableDataset`` of ``spec``, nothing downloaded up front.

    ``spec`` is webdataset shards (a ``.tar`` file, a glob of them, or a folder holding them: read with datasets'
    ``webdataset`` builder) or anything ``datasets.load_dataset`` streams: a local dataset folder (parquet, arrow,
    an image folder) or a Hub dataset id. Errors are our ConfigError with the reason.
    """
    import glob

    import datasets

    path = Path(spec)
    shards = sorted(glob.glob(str(path / "*.tar"))) if path.is_dir() else sorted(glob.glob(spec)) if spec.endswith(".tar") else []
    try:
        if shards:
            return datasets.load_dataset("webdataset", data_files={split: shards}, split=split, streaming=True)
        if spec.endswith(".tar"):
            raise ConfigError(f"no webdataset shards match {spec}")
        return datasets.load_dataset(spec, split=split, streaming=True)
    except ConfigError:
        raise
    except Exception as exc:  # datasets raises many types (missing files, no network, unknown split, bad shards)
        raise ConfigError(f"cannot stream the training dataset {spec!r} (split {split!r}): {exc}") from exc


@dataclass
class StreamedCrops:
    """Random crops of images streamed from a dataset too large to download (``--train_dataset``): web-scale data.

    Each process reads its own part of the stream (``datasets.distributed.split_dataset_by_node``: whole shards when
    their number is a multiple of the process count), shuffled in a buffer of ``shuffle_buffer`` images with
    ``seed``, epoch after epoch. One image gives one crop (:func:`random_crop`, the sample's generator), so a
    process consumes ``batch_size`` decodable images per step. Undecodable ones are skipped and counted
    (``skipped``; none decodable among 1000 in a row is an error), so the stream items read (``consumed``) go into
    each checkpoint, and a resumed run skips that many (read again, not decoded: exact, and quick next to decoding).
    """

    dataset: object  # datasets.IterableDataset
    crop: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    shuffle_buffer: int = 1000
    image_column: str | None = None
    zoom_out: float = 0.0
    skip: int = 0

    def __post_init__(self) -> None:
        import datasets
        from datasets.distributed import split_dataset_by_node

        features = self.dataset.features or {}

        def holds_images(feature) -> bool:  # an Image feature, or encoded bytes
            return isinstance(feature, datasets.Image) or getattr(feature, "dtype", None) in ("binary", "large_binary")

        images = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
        column = self.image_column or (images[0] if images else None)
        if column is None or column not in features or not holds_images(features[column]):
            raise ConfigError(f"the training dataset has no image column {self.image_column or ''!r} (columns: "
                              f"{', '.join(f'{k}: {v}' for k, v in features.items()) or 'unknown'}; set --image_column "
                              "to one of images or encoded bytes)")
        self.column = column
        ds = self.dataset.select_columns([column])
        if isinstance(features[column], datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
        ds = ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        self._stream = split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)
        self._epoch, self._iter, self.skipped, self.consumed = 0, None, 0, 0
        for _ in range(self.skip):
            self._next_item()

    def _next_item(self) -> dict:
        for _ in range(2):
            if self._iter is None:
                self._stream.set_epoch(self._epoch)
                self._iter = iter(self._stream)
            try:
                item = next(self._iter)[self.column]
                self.consumed += 1
                return item
            except StopIteration:
                self._iter, self._epoch = None, self._epoch + 1
        raise ImageInputError("the training dataset streams no images (for this process: fewer shards than processes?)")

    def _next_image(self) -> np.ndarray:
        for _ in range(1000):
            item = self._next_item()
            data = item.get("bytes") if isinstance(item, dict) else item
            if data is None and isinstance(item, dict) and item.get("path"):
                data = Path(item["path"]).read_bytes()
            try:
                if data is None:
                    raise ImageInputError("no image bytes")
                return fit_to_crop(_decode_bytes(data), self.crop)
            except ImageInputError:
                self.skipped += 1
        raise ImageInputError(f"1000 images in a row of column {self.column!r} could not be decoded")

    def batch(self, rng: np.random.Generator, size: int) -> Tensor:
        """(size, 3, crop, crop) float in [0, 1]: the next ``size`` images of the stream, one random crop each."""
        return _stack([random_crop(self._next_image(), rng, self.crop, self.zoom_out) for _ in range(size)])


def training_crops(args, train_files: Sequence[Path], crop: int, accelerator, resume_state: dict | None,
                   zoom_out: float = 0.0) -> PhotoCrops | StreamedCrops:
    """The crops a trainer draws from: ``args.train_dataset`` streamed (this process's part, past the images a
    resumed run read before, from its checkpoint's ``resume_state``) when set, else the photos ``train_files``."""
    if args.train_dataset is None:
        return PhotoCrops(train_files, crop, zoom_out=zoom_out)
    consumed = (resume_state or {}).get("stream_consumed", [])
    if resume_state and len(consumed) != accelerator.num_processes:
        raise ConfigError(f"the run was checkpointed with {len(consumed)} processes reading --train_dataset; resume it "
                          f"with as many (this one has {accelerator.num_processes}), or start a new run from its export")
    return StreamedCrops(open_image_stream(args.train_dataset, args.train_dataset_split), crop, seed=args.seed,
                         rank=accelerator.process_index, world_size=accelerator.num_processes,
                         shuffle_buffer=args.shuffle_buffer, image_column=args.image_column, zoom_out=zoom_out,
                         skip=consumed[accelerator.process_index] if consumed else 0)


def stream_position(crops: PhotoCrops | StreamedCrops, accelerator) -> dict:
    """What a checkpoint keeps of the input (called on every process): the stream items each process read."""
    if not isinstance(crops, StreamedCrops):
        return {}
    counts = accelerator.gather(torch.tensor([crops.consumed], device=accelerator.device))
    return {"stream_consumed": [int(c) for c in counts.tolist()]}
