"""Small helpers around transformers shared by the package."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

__all__ = ["quiet_transformers", "require_hub", "HUB_CHECK_SECONDS"]

#: How long :func:`require_hub` waits for the hub before giving up (transformers retries for ~30 s).
HUB_CHECK_SECONDS = 2.0


def require_hub(name: str | os.PathLike, cache_dir: str | os.PathLike | None = None, revision: str | None = None,
                subfolder: str | None = None) -> None:
    """Fail fast, with our own error, when ``name`` is a hub id that cannot be had.

    A local path passes; so does a hub id whose ``config.json`` is in the local cache. Otherwise the hub
    must answer for the model within :data:`HUB_CHECK_SECONDS` (and ``HF_HUB_OFFLINE`` must be unset), else
    :class:`~cotam_llava.errors.CheckpointError` says so (no answer, or no such model), instead of
    transformers' retries.
    """
    from .errors import CheckpointError

    text = os.fspath(name)
    if Path(text).expanduser().exists():
        return
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        filename = f"{subfolder}/config.json" if subfolder else "config.json"
        if isinstance(try_to_load_from_cache(text, filename, cache_dir=cache_dir, revision=revision), str):
            return
    except ValueError:  # not a valid repo id either
        raise CheckpointError(f"{text!r} is neither a local folder nor a hub model id") from None
    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(f"{text} is not in the local cache and HF_HUB_OFFLINE is set: download it first, or "
                              "give a local folder")
    url = f"{constants.ENDPOINT.rstrip('/')}/api/models/{text}"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=HUB_CHECK_SECONDS).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise CheckpointError(f"{text} is not in the local cache and {constants.ENDPOINT} has no model of that "
                                  "name: check the id, or give a local folder") from None
        # 401/403 (gated or private) and other answers: transformers reports them with the right advice
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections; ValueError: a malformed endpoint
        reason = getattr(exc, "reason", None) or exc
        raise CheckpointError(
            f"{text} is not in the local cache and {constants.ENDPOINT} does not answer ({reason}): "
            "download it on a machine with access, or give a local folder"
        ) from exc


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for one block, then restore them.

    Used where the package loads weights on purpose partially (guidance keeps only the first
    K layers, so the deeper ones are reported as "unexpected") or from its own cache.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
