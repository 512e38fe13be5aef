"""``cotam patch-llava``, ``llava-tower`` and ``convert-llava``: the original LLaVA code base."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from ..shipped import default_codec
from ._common import add_common, check_output


def cmd_patch_llava(args: argparse.Namespace) -> int:
    from ..integrations.llava.patching import apply_patches, patch_state, revert_patches

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
    from ..integrations.llava.tower import make_tower_folder

    codec = args.checkpoint or default_codec()
    if codec is None:
        raise ConfigError("no codec: give --checkpoint DIR (or set $COTAM_CHECKPOINT)")
    out = make_tower_folder(args.encoder, codec, check_output(args.output, folder=True), adapter=args.adapter,
                            quality=args.quality)
    if not args.quiet:
        print(f"{out}: CoTAM tower folder (encoder {args.encoder}, codec {codec}, "
              f"adapter {args.adapter or 'zero-initialised'}); use it as LLaVA's --vision_tower / mm_vision_tower")
    return 0


def cmd_convert_llava(args: argparse.Namespace) -> int:
    from ..integrations.llava.convert import to_original, to_transformers

    if args.to == "original":
        out = to_original(args.src, args.dst, image_aspect_ratio=args.image_aspect_ratio)
    else:
        out = to_transformers(args.src, args.dst)
    if not args.quiet:
        print(f"{out}: {args.to} layout written from {args.src}")
    return 0


def register(sub: Any) -> None:
    """Add ``patch-llava``, ``llava-tower`` and ``convert-llava`` to the ``cotam`` subcommands."""
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
    add_common(p)
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
