"""Apply, check and revert ``patches/llava/`` on a copy of the original LLaVA code base (``cotam patch-llava``).

The patch set (listed in ``patches/llava/series``) is made against ``llava-torch`` 1.2.2.post1 and applies with
``patch -p1`` (or ``git apply``) in the folder that *contains* ``llava/`` — for an installed package, its
``site-packages`` folder. It only adds routing lines into :mod:`cotam_llava.integrations.llava`. This module runs
GNU ``patch`` when it is on the PATH, else ``git apply``; it never imports ``llava``.

States of a tree: ``pristine`` (every patch would apply), ``applied`` (every patch would revert), anything else is
``modified`` (a patch neither applies nor reverts: another version of LLaVA, or local edits) and is left alone.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError, CoTAMError

__all__ = ["PATCHES_DIR", "LLAVA_VERSION", "PatchState", "patch_files", "find_llava_root", "patch_state",
           "apply_patches", "revert_patches"]

def _patches_dir() -> Path:
    from ...shipped import shipped

    return shipped("llava-patches") or Path(__file__).resolve().parents[3] / "patches" / "llava"


#: ``patches/llava`` of this checkout (or the copy a wheel carries, see ``cotam_llava/shipped.py``).
PATCHES_DIR = _patches_dir()
#: The release the patches are made against.
LLAVA_VERSION = "llava-torch 1.2.2.post1"


class PatchError(CoTAMError):
    """The patch set cannot be applied or reverted here."""


@dataclass(frozen=True)
class PatchState:
    """Where a tree stands: ``state`` is 'pristine', 'applied' or 'modified'; per patch: 'applies', 'applied', 'conflict'."""

    root: Path
    state: str
    patches: dict[str, str]
    files: tuple[str, ...]


def patch_files(patches_dir: str | os.PathLike | None = None) -> list[Path]:
    """The patches in ``series`` order."""
    folder = Path(patches_dir) if patches_dir is not None else PATCHES_DIR
    series = folder / "series"
    if not series.is_file():
        raise ConfigError(f"no patch series at {series} (patches/llava of the cotam-llava repository; a wheel built "
                          "from it carries a copy)")
    names = [line.strip() for line in series.read_text().splitlines() if line.strip() and not line.startswith("#")]
    paths = [folder / name for name in names]
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"{series} names {p.name}, which does not exist")
    return paths


def _touched(patch: Path) -> list[str]:
    return [line[6:].split("\t")[0] for line in patch.read_text().splitlines() if line.startswith("+++ b/")]


def find_llava_root(directory: str | os.PathLike | None = None) -> Path:
    """The folder that contains ``llava/``: ``directory`` (or its parent, when it is ``llava/`` itself), else
    where the installed ``llava`` package lives (found without importing it).

    Raises:
        ConfigError: no ``llava`` package there / installed.
    """
    if directory is not None:
        d = Path(directory).expanduser()
        if (d / "llava" / "__init__.py").is_file():
            return d.resolve()
        if d.name == "llava" and (d / "__init__.py").is_file():
            return d.parent.resolve()
        raise ConfigError(f"{d} does not contain the llava package (llava/__init__.py); give the folder that holds llava/")
    spec = importlib.util.find_spec("llava")
    if spec is None or not spec.origin:
        raise ConfigError("the llava package is not installed (pip install --no-deps llava-torch==1.2.2.post1, or give "
                          "the folder of a LLaVA checkout)")
    return Path(spec.origin).resolve().parent.parent


def _run(args: list[str], root: Path) -> bool:
    try:
        proc = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PatchError(f"cannot run {args[0]}: {exc}") from exc
    return proc.returncode == 0


def _tool() -> str:
    if shutil.which("patch"):
        return "patch"
    if shutil.which("git"):
        return "git"
    raise PatchError("neither GNU patch nor git is on the PATH")


def _check(patch: Path, root: Path, reverse: bool) -> bool:
    if _tool() == "patch":
        return _run(["patch", "-p1", "--batch", "--silent", "--dry-run", "-f", *(["-R"] if reverse else ["--forward"]),
                     "-i", str(patch)], root)
    return _run(["git", "apply", "--check", *(["-R"] if reverse else []), str(patch)], root)


def _do(patch: Path, root: Path, reverse: bool) -> None:
    if _tool() == "patch":
        ok = _run(["patch", "-p1", "--batch", "--silent", "-f", "--no-backup-if-mismatch",
                   *(["-R"] if reverse else ["--forward"]), "-i", str(patch)], root)
    else:
        ok = _run(["git", "apply", *(["-R"] if reverse else []), str(patch)], root)
    if not ok:
        raise PatchError(f"{'reverting' if reverse else 'applying'} {patch.name} failed in {root}")


def patch_state(directory: str | os.PathLike | None = None, patches_dir: str | os.PathLike | None = None) -> PatchState:
    """Check (without changing anything) whether the patch set is applied to the tree."""
    root = find_llava_root(directory)
    patches = patch_files(patches_dir)
    per: dict[str, str] = {}
    for p in patches:
        if _check(p, root, reverse=True):
            per[p.name] = "applied"
        elif _check(p, root, reverse=False):
            per[p.name] = "applies"
        else:
            per[p.name] = "conflict"
    values = set(per.values())
    state = "applied" if values == {"applied"} else "pristine" if values == {"applies"} else "modified"
    files = tuple(sorted({f for p in patches for f in _touched(p)}))
    return PatchState(root, state, per, files)


def apply_patches(directory: str | os.PathLike | None = None, patches_dir: str | os.PathLike | None = None) -> tuple[PatchState, bool]:
    """Apply the patch set; returns (the new state, whether anything changed). Already applied: nothing to do.

    Raises:
        PatchError: the tree is neither pristine nor patched (nothing is changed then).
    """
    before = patch_state(directory, patches_dir)
    if before.state == "applied":
        return before, False
    if before.state != "pristine":
        raise PatchError(_modified_message(before))
    for p in patch_files(patches_dir):
        _do(p, before.root, reverse=False)
    return patch_state(before.root, patches_dir), True


def revert_patches(directory: str | os.PathLike | None = None, patches_dir: str | os.PathLike | None = None) -> tuple[PatchState, bool]:
    """Revert the patch set (last patch first); returns (the new state, whether anything changed)."""
    before = patch_state(directory, patches_dir)
    if before.state == "pristine":
        return before, False
    if before.state != "applied":
        raise PatchError(_modified_message(before))
    for p in reversed(patch_files(patches_dir)):
        _do(p, before.root, reverse=True)
    return patch_state(before.root, patches_dir), True


def _modified_message(state: PatchState) -> str:
    detail = ", ".join(f"{k}: {v}" for k, v in state.patches.items())
    return (f"{state.root}/llava is neither {LLAVA_VERSION} as released nor patched by cotam ({detail}); "
            "nothing was changed")
