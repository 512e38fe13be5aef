"""Token fidelity of CoTAM's parts on a real encoder: base codec, + guidance, + adapter, full CoTAM (issue 5).

Every variant goes through real bitstreams and the CoTAM tower, on the centre square of each photo (resized
to the square codec canvas by the edge)::

    photo ─centre square─▶ picture ─edge (guidance on | off)─▶ .cotam bytes ─tower (adapter on | off)─▶ tokens
    photo ─centre square─▶ picture ─host processor─▶ encoder ─▶ reference tokens
    fidelity = cosine (mean over tokens) and MSE of the final-layer tokens against the reference

The rows are :class:`~cotam_llava.evaluation.proxies.FidelityRow` s (``codec`` = variant), so
:func:`~cotam_llava.evaluation.proxies.summarize` and :mod:`~cotam_llava.evaluation.proxy_report` give the
points, BD-rates (full CoTAM against the base codec) and plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..imageio import ImageLike, to_pil
from ..vision.edge import EdgeEncoder, center_square
from ..vision.tower import CoTAMVisionTower
from .proxies import FidelityRow, token_fidelity

__all__ = ["VARIANTS", "run_adapter_fidelity"]

#: variant → (guidance at the edge, adapter in the tower).
VARIANTS: dict[str, tuple[bool, bool]] = {
    "base": (False, False),
    "base+guidance": (True, False),
    "base+adapter": (False, True),
    "cotam": (True, True),
}


def run_adapter_fidelity(
    tower: CoTAMVisionTower,
    images: Sequence[ImageLike],
    qualities: Sequence[int],
    guidance: Any = None,
    variants: Sequence[str] = tuple(VARIANTS),
    names: Sequence[str] | None = None,
    progress: bool = False,
) -> list[FidelityRow]:
    """Final-token fidelity of each variant, image and quality.

    Args:
        tower: a CoTAM tower (its adapter as trained; its codec finalized).
        images: photos (paths, PIL, arrays).
        qualities: base quality levels to code at.
        guidance: a ``ShallowAttentionGuidance`` for the guided variants (required if one is asked for).
        variants: names from :data:`VARIANTS`.
        names: image names for the rows (default: file names or indices).

    Returns:
        One :class:`FidelityRow` per (variant, quality, image); bpp counts every byte of the container
        (header and guidance map included) over the picture's pixels.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if guidance is None and any(VARIANTS[v][0] for v in variants):
        raise ValueError("guided variants need a guidance model")
    edges = {
        False: EdgeEncoder(tower.codec, tower.cotam_config, use_guidance=False),
        True: EdgeEncoder(tower.codec, tower.cotam_config, guidance=guidance) if guidance is not None else None,
    }
    processor = tower.image_processor
    rows: list[FidelityRow] = []
    enabled = tower.adapter_enabled
    work = list(enumerate(images))
    try:
        with torch.no_grad():
            for i, image in tqdm(work, desc="adapter fidelity", unit="image", disable=not progress):
                name = names[i] if names is not None else (Path(image).name if isinstance(image, (str, Path)) else str(i))
                picture = center_square(to_pil(image))  # square canvas: no aspect distortion for any host
                pv = processor(images=[picture], return_tensors="pt")["pixel_values"].to(tower.device)
                reference = tower.encoder(pixel_values=pv).last_hidden_state
                for q in qualities:
                    streams = {g: edges[g].encode_image(picture, q) for g in {VARIANTS[v][0] for v in variants}}
                    for variant in variants:
                        guided, adapted = VARIANTS[variant]
                        tower.adapter_enabled = adapted
                        tokens = tower(streams[guided]).last_hidden_state
                        cos, mse = token_fidelity(reference, tokens)
                        data = streams[guided]
                        rows.append(FidelityRow(
                            codec=variant, quality=int(q), image=name, width=picture.width, height=picture.height,
                            bytes=len(data), bpp=len(data) * 8 / (picture.width * picture.height),
                            cosine=float(cos.mean()), mse=float(mse.mean()),
                        ))
    finally:
        tower.adapter_enabled = enabled
    return rows
