"""The learned codec's variants, one vocabulary for every tool: what ``base``, ``cotam``, ... mean.

=================  =================  ===================  ====================================================
name               guidance (edge)    adapter (tower)      used by
=================  =================  ===================  ====================================================
``base``           no                 no                   the lmms-eval plugin, eval/sweep.py, the adapter
``cotam-noadapter``  yes              no                   study, the offline proxies (which run no adapter:
``cotam-noguide``  no                 yes                  they know base and cotam-noadapter only)
``cotam``          yes                yes
=================  =================  ===================  ====================================================

The codec benchmark (``cotam bench``, ``cotam analyze``) names codecs, not MLLM variants: there
``cotam-elic`` is the learned codec (as ``base``) and ``cotam-elic+guidance`` the guided one (as ``cotam-noadapter``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Variant", "VARIANTS", "LEARNED", "variant"]


@dataclass(frozen=True)
class Variant:
    """One learned-codec variant: whether the edge codes with guidance, and whether the tower runs the adapter."""

    name: str
    guidance: bool
    adapter: bool


VARIANTS: dict[str, Variant] = {
    v.name: v for v in (
        Variant("cotam", guidance=True, adapter=True),
        Variant("cotam-noguide", guidance=False, adapter=True),
        Variant("cotam-noadapter", guidance=True, adapter=False),
        Variant("base", guidance=False, adapter=False),
    )
}
#: The variant names, in the order of the table.
LEARNED: tuple[str, ...] = tuple(VARIANTS)


def variant(name: str) -> Variant:
    """The variant called ``name`` (ConfigError naming the others otherwise)."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"unknown learned-codec variant {name!r}; choose from {', '.join(LEARNED)}") from None
