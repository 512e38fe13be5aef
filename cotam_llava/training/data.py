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

from ..errors import ImageInputError
from ..imageio import IMAGE_SUFFIXES, to_uint8_array

__all__ = ["PhotoCrops", "photo_files", "sample_quality_maps", "split_files"]


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
        from PIL import Image

        self.images: list[np.ndarray] = []
        for path in self.files:
            img = to_uint8_array(path)
            h, w = img.shape[:2]
            if min(h, w) < self.crop:
                scale = self.crop / min(h, w)
                img = np.asarray(Image.fromarray(img).resize((max(self.crop, round(w * scale)), max(self.crop, round(h * scale))), Image.BICUBIC))
            self.images.append(img)

    def batch(self, rng: np.random.Generator, size: int) -> Tensor:
        """(size, 3, crop, crop) float in [0, 1]."""
        out = np.empty((size, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(size):
            img = self.images[int(rng.integers(len(self.images)))]
            h, w = img.shape[:2]
            side = self.crop
            if self.zoom_out and min(h, w) > self.crop and rng.random() < self.zoom_out:
                side = int(round(np.exp(rng.uniform(np.log(self.crop), np.log(min(h, w))))))
            top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
            patch = img[top:top + side, left:left + side]
            if side != self.crop:
                from PIL import Image

                patch = np.asarray(Image.fromarray(patch).resize((self.crop, self.crop), Image.BICUBIC))
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            if rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


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
