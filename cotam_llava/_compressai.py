"""Import CompressAI without torchvision.

CompressAI 1.2.8 imports ``torchvision.transforms`` at module level in
``compressai/registry/transforms.py`` only to pre-fill its transform registry;
nothing this package uses needs those entries, and torchvision has no CPU build
on some machines. When torchvision is importable this module is a plain
``import compressai``. When it is not, it registers a replacement for that one
submodule (same public names, ``TRANSFORMS`` filled from torch_geometric only,
as upstream does minus the torchvision half) under its own name in
``sys.modules`` before importing compressai, and touches nothing else.

Every compressai import in cotam_llava goes through this module::

    from cotam_llava._compressai import compressai
    from compressai.entropy_models import EntropyBottleneck  # after the line above
"""

from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["compressai", "TORCHVISION_AVAILABLE", "SHIMMED"]

_TRANSFORMS_MODULE = "compressai.registry.transforms"

TORCHVISION_AVAILABLE: bool = importlib.util.find_spec("torchvision") is not None
#: True when the torchvision-free replacement registry was installed.
SHIMMED: bool = False


def _install_transforms_shim() -> None:
    """Register a torchvision-free ``compressai.registry.transforms``."""
    global SHIMMED
    if _TRANSFORMS_MODULE in sys.modules:  # compressai already imported (or shimmed)
        return
    try:
        import torch_geometric.transforms as pyg_transforms

        base = {k: v for k, v in vars(pyg_transforms).items() if k[:1].isupper()}
    except ImportError:  # upstream needs it too; keep the registry usable without it
        base = {}

    module = types.ModuleType(_TRANSFORMS_MODULE)
    module.__doc__ = "cotam_llava replacement: CompressAI's transform registry without torchvision."
    module.TRANSFORMS = base
    module.__all__ = ["TRANSFORMS", "register_transform"]

    def register_transform(name: str):
        """Decorator for registering a transform (same as upstream)."""

        def decorator(cls):
            module.TRANSFORMS[name] = cls
            return cls

        return decorator

    module.register_transform = register_transform
    sys.modules[_TRANSFORMS_MODULE] = module
    SHIMMED = True


if not TORCHVISION_AVAILABLE and "compressai" not in sys.modules:
    _install_transforms_shim()

try:
    import compressai  # noqa: E402
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"cotam_llava needs compressai==1.2.8 ({exc}). Install the pinned lock file: "
        "`pip install --no-deps -r requirements/lock-cpu.txt` (see README)."
    ) from exc
