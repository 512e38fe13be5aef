"""The ``cotam`` command (also ``python -m cotam_llava``).

One module per group of subcommands, each command's parser beside its handler (``register(sub)`` adds the
parsers; the handlers call library functions, no codec logic lives here):

=====================  ==========================================================
module                 commands
=====================  ==========================================================
:mod:`.encode`         ``encode``
:mod:`.decode`         ``decode``, ``info``
:mod:`.checkpoints`    ``paths``, ``init-codec``
:mod:`.bench`          ``bench``, ``demo`` (the main job)
:mod:`.guidance`       ``guidance``
:mod:`.chat`           ``chat`` (``--server URL``: through a ``cotam serve`` server)
:mod:`.serve`          ``serve`` (an OpenAI-compatible server on vLLM; parser and handler in serving/cli.py)
:mod:`.llava`          ``patch-llava``, ``llava-tower``, ``convert-llava``
:mod:`.train`          ``train-codec``, ``train-adapter``, ``train-mllm``, ``tiny-instruct``
:mod:`.analyze`        ``analyze …`` (the paper's §2 analyses)
=====================  ==========================================================

:mod:`._common` holds what they share (checked output paths, ``--canvas`` / ``--tiles`` / ``--qualities``
parsing, the default codec, the benchmark codecs). Every error the package knows about prints one line
(``cotam: error: ...``) and exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from ..errors import CoTAMError
from . import analyze, bench, chat, checkpoints, decode, encode, guidance, llava, serve, train
from ._common import Parser, UsageError

__all__ = ["main", "build_parser", "UsageError"]

#: Registration order is the order of ``cotam --help``.
_COMMAND_MODULES = (encode, decode, checkpoints, bench, guidance, chat, serve, llava, train, analyze)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cotam",
        description="CoTAM: an image codec tailored to multimodal LLMs (edge encoder, cloud decoder, benchmarks).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cotam`` command; returns the exit code (0 ok, 1 error, including malformed arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv[:1] and argv[0] in train.DATACLASS_COMMANDS:  # options from a dataclass (HfArgumentParser)
            return train.DATACLASS_COMMANDS[argv[0]](argv[1:])
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
