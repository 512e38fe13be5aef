"""Register the CoTAM classes with transformers' Auto classes without importing transformers (or torch) early.

``import cotam_llava`` must stay light (``cotam info`` reads a header without torch), but transformers' Auto
registries take real classes, and every CoTAM class needs transformers' configuration module, which imports
torch. So registration is deferred to the moment transformers' Auto machinery is imported — when torch is
being loaded anyway — and done then by importing :mod:`cotam_llava.models`::

    import cotam_llava ─▶ install(): Auto modules already imported? ── yes ─▶ register now
                                      │ no
                                      ▼
          a finder on sys.meta_path watches imports of transformers.* and cotam_llava.* modules
          ─ after transformers.models.auto.{configuration,modeling,processing}_auto has run, at the first moment
            no transformers / cotam_llava module is still half-initialised (a model file importing the Auto
            classes mid-way is the usual case) ─▶ register, remove the finder

Registering at a half-initialised moment would import ``transformers.modeling_llava`` & co. while the module
that triggered it is still running — a circular import — hence the wait. A registration that fails (a broken
optional dependency, say) is logged and never breaks the user's own import; ``import cotam_llava.models``
then raises the real error. Only transformers and cotam_llava modules are watched: a third-party package that
imports transformers' Auto classes half-way through its own import *and* is needed by ``cotam_llava.models``
would make the registration fail (logged; none of the installed ones does).
"""

from __future__ import annotations

import _thread
import importlib
import sys
from typing import Any

__all__ = ["install", "is_registered"]

_TRIGGERS = frozenset({
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.processing_auto",
})
_WATCHED = ("transformers", "cotam_llava")
_lock = _thread.RLock()
_state = {"pending": False, "done": False}


def is_registered() -> bool:
    """Whether the CoTAM classes have been registered (or registration was attempted and failed, logged)."""
    return _state["done"]


def _watched(name: str) -> bool:
    return name.partition(".")[0] in _WATCHED


def _busy(finished: str | None) -> bool:
    """Some transformers / cotam_llava module (other than ``finished`` and the cotam_llava package itself, whose
    ``__init__`` may be what calls this) is still being executed."""
    for name, module in list(sys.modules.items()):
        if name in (finished, "cotam_llava") or not _watched(name):
            continue
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


def _register() -> None:
    _state["done"] = True
    _uninstall()
    try:
        importlib.import_module("cotam_llava.models")  # its import registers (register_auto_classes)
    except Exception as exc:  # never break the import that triggered us
        import logging

        logging.getLogger("cotam_llava").warning("cotam_llava: could not register the CoTAM classes with transformers' Auto classes (%s: %s); "
                     "import cotam_llava.models to see the error", type(exc).__name__, exc)


def _maybe_register(finished: str | None) -> None:
    with _lock:
        if _state["done"]:
            return
        if finished in _TRIGGERS:
            _state["pending"] = True
        if _state["pending"] and not _busy(finished):
            _register()


class _NotifyingLoader:
    """The module's own loader; after the module has run, gives the registration its chance."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _maybe_register(module.__spec__.name)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, is_package...
        return getattr(self._loader, name)


class _AutoClassFinder:
    """Finds nothing itself: asks the finders after it, and wraps the loader of transformers / cotam_llava modules."""

    def __init__(self) -> None:
        self._local = _thread._local()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if _state["done"] or not _watched(fullname) or getattr(self._local, "active", False):
            return None
        self._local.active = True
        try:
            finders = sys.meta_path
            later = finders[finders.index(self) + 1:] if self in finders else []
            for finder in later:
                find = getattr(finder, "find_spec", None)
                spec = find(fullname, path, target) if find is not None else None
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _NotifyingLoader(spec.loader)
                    return spec
            return None
        finally:
            self._local.active = False


_finder = _AutoClassFinder()


def _uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    """Register now if transformers' Auto classes are already imported (and nothing is half-initialised), else
    watch for them (idempotent)."""
    with _lock:
        if _state["done"]:
            return
        if any(name in sys.modules for name in _TRIGGERS):
            _state["pending"] = True
            if not _busy(None):
                _register()
                return
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
