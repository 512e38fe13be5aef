"""Other code bases CoTAM plugs into.

* :mod:`cotam_llava.integrations.llava` — the original LLaVA code base (haotian-liu/LLaVA, ``llava-torch``
  1.2.2.post1 on PyPI): the vision tower its patched builder builds (``patches/llava/``), the image processor
  that turns pictures into packed bitstreams, the transformers 5.x shim, applying the patches, and converting
  CoTAM folders between the transformers layout and the original one.

Nothing here is imported by ``import cotam_llava``.
"""
