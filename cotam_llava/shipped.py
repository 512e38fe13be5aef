"""Where the shipped files are: the default codec, the default adapter and the lmms-eval tasks.

In a clone they are the repository's ``checkpoints/`` and ``eval/tasks/``. A wheel built from the repository
(``pip install .``, ``python -m build``) carries copies as package data under ``cotam_llava/_shipped/``
(``setup.py`` puts them there), so a pip user without the repository gets the same defaults:

    >>> from cotam_llava.shipped import default_codec, tasks_dir
    >>> default_codec()          # $COTAM_CHECKPOINT, else the shipped elic-small
    >>> tasks_dir()              # for lmms-eval --include_path (lmms-eval has no entry point for tasks)

No torch, no transformers: ``cotam info`` and friends import this for free.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHIPPED", "shipped", "default_codec", "default_adapter", "tasks_dir", "PACKAGE_DATA"]

_PACKAGE = Path(__file__).resolve().parent
_REPO = _PACKAGE.parent

#: Folder inside the installed package that holds the shipped copies (filled by setup.py's build step).
PACKAGE_DATA = _PACKAGE / "_shipped"

#: name → (path in the repository, path under :data:`PACKAGE_DATA`, a file that must exist in it)
SHIPPED: dict[str, tuple[str, str, str]] = {
    "elic-small": ("checkpoints/elic-small", "elic-small", "config.json"),
    "adapter-dinov2": ("checkpoints/adapter-dinov2", "adapter-dinov2", "adapter_config.json"),
    "tasks": ("eval/tasks", "tasks", "cotam_tiny/cotam_tiny.yaml"),
    "llava-patches": ("patches/llava", "patches/llava", "series"),  # cotam patch-llava
}


def shipped(name: str) -> Path | None:
    """The folder of a shipped item (:data:`SHIPPED`): the repository's copy in a clone, else the package data's;
    None when neither is there (a wheel built without them)."""
    if name not in SHIPPED:
        raise KeyError(f"unknown shipped item {name!r}; one of {', '.join(SHIPPED)}")
    in_repo, in_package, marker = SHIPPED[name]
    for folder in (_REPO / in_repo, PACKAGE_DATA / in_package):
        if (folder / marker).is_file():
            return folder
    return None


def default_codec() -> Path | None:
    """``$COTAM_CHECKPOINT``, else the shipped ``elic-small`` codec, else None."""
    env = os.environ.get("COTAM_CHECKPOINT")
    if env:
        return Path(env)
    return shipped("elic-small")


def default_adapter() -> Path | None:
    """The shipped ``adapter-dinov2`` (paired with the shipped codec), else None."""
    return shipped("adapter-dinov2")


def tasks_dir() -> Path | None:
    """The lmms-eval task folder (``cotam_tiny``, ``cotam_mme``, ...), for ``--include_path``."""
    return shipped("tasks")
