"""``cotam paths`` and ``cotam init-codec``: where the shipped codec, adapter and tasks are; a fresh codec."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from ._common import add_common, check_output


def cmd_paths(args: argparse.Namespace) -> int:
    from ..shipped import default_adapter, default_codec, tasks_dir

    found = {"codec": default_codec(), "adapter": default_adapter(), "tasks": tasks_dir()}
    if args.only:
        if found[args.only] is None:
            raise ConfigError(f"no shipped {args.only} in this installation (a wheel built without it?)")
        print(found[args.only])
        return 0
    for name, folder in found.items():
        print(f"{name}: {folder if folder is not None else '(none)'}")
    return 0


def cmd_init_codec(args: argparse.Namespace) -> int:
    from ..codec.model import CoTAMELIC

    output = check_output(args.output, folder=True)
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


def register(sub: Any) -> None:
    """Add ``paths`` and ``init-codec`` to the ``cotam`` subcommands."""
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
    add_common(p, checkpoint=False)
    p.set_defaults(func=cmd_init_codec)
