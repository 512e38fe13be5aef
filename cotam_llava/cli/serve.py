"""``cotam serve``: an OpenAI-compatible server on vLLM that takes .cotam bitstreams (docs/serving.md).

The parser and handler live with the server (:mod:`cotam_llava.serving.cli`); this module registers them.
"""

from __future__ import annotations

from typing import Any

from ..serving.cli import add_serve_parser


def register(sub: Any) -> None:
    """Add ``serve`` to the ``cotam`` subcommands."""
    add_serve_parser(sub)
