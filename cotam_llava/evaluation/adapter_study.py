"""Token fidelity of CoTAM's parts on a real encoder: base codec, + guidance, + adapter, full CoTAM (issue 5).

Every variant goes through real bitstreams and the CoTAM tower, on the centre square of each photo (resized
to the square codec canvas by the edge)::

    photo ─centre square─▶ picture ─edge (guidance on | off)─▶ .cotam bytes ─tower (adapter on | off)─▶ tokens
    photo ─centre square─▶ picture ─host processor─▶ encoder ─▶ reference tokens
    fidelity = cosine (mean over tokens) and MSE of the final-layer tokens against the reference

Classical references (JPEG, WebP, …) code the same picture the edge codes — the centre square resized to the
codec canvas as the pipeline does — to a real file; its decoded pixels go through the host processor and the
stock encoder. Every variant's bpp is its file's bits over the centre square's pixels, so all curves share
one axis.

The rows are :class:`~cotam_llava.evaluation.proxies.FidelityRow` s (``codec`` = variant), so
:func:`~cotam_llava.evaluation.proxies.summarize` and :mod:`~cotam_llava.evaluation.proxy_report` give the
points, BD-rates (full CoTAM against the base codec) and plots.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..codec.classical import classical_codec
from ..codec.pipeline import canvas_for
from ..imageio import ImageLike, to_pil
from ..vision.edge import EdgeEncoder, center_square
from ..vision.tower import CoTAMVisionTower
from .variants import VARIANTS
from .proxies import FidelityRow, token_fidelity

__all__ = ["STUDY_VARIANTS", "run_adapter_fidelity"]

#: The variants the study compares (names and meaning: :mod:`cotam_llava.evaluation.variants`).
STUDY_VARIANTS = ("base", "cotam-noadapter", "cotam-noguide", "cotam")


def run_adapter_fidelity(
    tower: CoTAMVisionTower,
    images: Sequence[ImageLike],
    qualities: Sequence[int],
    guidance: Any = None,
    variants: Sequence[str] = STUDY_VARIANTS,
    names: Sequence[str] | None = None,
    progress: bool = False,
    classical: Mapping[str, Sequence[int]] | None = None,
    standard: Mapping[str, Sequence[int]] | None = None,
    stream_cache: str | Path | None = None,
    cache_key: str = "",
) -> list[FidelityRow]:
    """Final-token fidelity of each variant, image and quality (and of classical codecs on the same picture).

    Args:
        tower: a CoTAM tower (its adapter as trained; its codec finalized).
        images: photos (paths, PIL, arrays).
        qualities: base quality levels to code at.
        guidance: a ``ShallowAttentionGuidance`` for the guided variants (required if one is asked for).
        variants: names from :data:`~cotam_llava.evaluation.variants.VARIANTS`.
        names: image names for the rows (default: file names or indices).
        classical: classical codec name (``jpeg``, ``webp``, ``avif``, ``jxl``) → its qualities (0–100), coded on
            the picture resized to the codec canvas.
        standard: standard base codec (``hevc``, ``av1``, ``hevc+guidance``: its map from ``guidance``) → levels
            0–9, coded like the classical references (a real ``.cotam`` file of kind hevc / av1, decoded pixels →
            the stock encoder; no adapter: these bases have no latent).
        stream_cache: a folder of the edge's ``.cotam`` files from earlier runs, filled as the study goes; a file is
            found again by the picture's pixels, the level, the codec id, the guidance config and ``cache_key``
            (e.g. the guidance encoder's name). Host-rule maps cost ~20 s a picture and do not depend on the
            adapter, so a second adapter is studied on the same files in seconds. Cached files are decoded like any
            other (our container, no pickles); a damaged one fails with the container's error.
        cache_key: what else the edge's files depend on (see ``stream_cache``).

    Returns:
        One :class:`FidelityRow` per (variant or classical codec, quality, image); bpp counts every byte of the
        container (header and guidance map included) or file over the picture's pixels.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if guidance is None and any(VARIANTS[v].guidance for v in variants):
        raise ValueError("guided variants need a guidance model")
    references = {name: classical_codec(name) for name in (classical or {})}
    qualities_of = dict(classical or {})
    for name, levels in (standard or {}).items():
        from ..codec.registry import StandardImageCodec
        from ..codec.standard import StandardCodec

        kind, _, extra = name.partition("+")
        if extra not in ("", "guidance") or (extra and guidance is None):
            raise ValueError(f"unknown standard reference {name!r} (hevc, av1, hevc+guidance; guidance needs a model)")
        references[name] = StandardImageCodec(StandardCodec(kind), name=name, guidance=guidance if extra else None)
        qualities_of[name] = levels
    edges = {
        False: EdgeEncoder(tower.codec, tower.cotam_config, use_guidance=False),
        True: EdgeEncoder(tower.codec, tower.cotam_config, guidance=guidance) if guidance is not None else None,
    }
    processor = tower.image_processor
    rows: list[FidelityRow] = []
    cache = Path(stream_cache) if stream_cache is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    def edge_stream(guided: bool, picture: Image.Image, q: int) -> bytes:
        if cache is None:
            return edges[guided].encode_image(picture, q)
        pixels = np.asarray(picture.convert("RGB"))
        config = getattr(guidance, "config", None) if guided else None
        key = hashlib.sha256(pixels.tobytes() + repr((pixels.shape, int(q), tower.codec.codec_id.hex(),
                                                      repr(config), cache_key)).encode()).hexdigest()[:32]
        path = cache / f"{key}.cotam"
        if path.is_file():
            return path.read_bytes()
        data = edges[guided].encode_image(picture, q)
        tmp = path.with_suffix(".partial")
        tmp.write_bytes(data)
        tmp.replace(path)
        return data

    def add(codec: str, q: int, name: str, picture: Image.Image, data: bytes, reference: torch.Tensor,
            tokens: torch.Tensor) -> None:
        cos, mse = token_fidelity(reference, tokens)
        rows.append(FidelityRow(codec=codec, quality=int(q), image=name, width=picture.width, height=picture.height,
                                bytes=len(data), bpp=len(data) * 8 / (picture.width * picture.height),
                                cosine=float(cos.mean()), mse=float(mse.mean())))

    def stock_tokens(picture: Image.Image) -> torch.Tensor:
        pv = processor(images=[picture], return_tensors="pt")["pixel_values"].to(tower.device)
        return tower.encoder(pixel_values=pv).last_hidden_state

    work = list(enumerate(images))
    with torch.no_grad():
        for i, image in tqdm(work, desc="adapter fidelity", unit="image", disable=not progress):
            name = names[i] if names is not None else (Path(image).name if isinstance(image, (str, Path)) else str(i))
            picture = center_square(to_pil(image))  # square canvas: no aspect distortion for any host
            reference = stock_tokens(picture)
            for q in qualities:
                streams = {g: edge_stream(g, picture, q) for g in {VARIANTS[v].guidance for v in variants}}
                for variant in variants:
                    guided = VARIANTS[variant].guidance
                    with tower.variant(adapter=VARIANTS[variant].adapter):
                        tokens = tower(streams[guided]).last_hidden_state
                    add(variant, q, name, picture, streams[guided], reference, tokens)
            (cw, ch), _ = canvas_for(picture.size, tower.cotam_config.canvas_size)
            canvas = np.asarray(picture.convert("RGB").resize((cw, ch), Image.BICUBIC))  # as the pipeline resizes
            for codec_name, codec in references.items():
                for q in qualities_of[codec_name]:
                    data = codec.encode(canvas, q)
                    add(codec_name, q, name, picture, data, reference, stock_tokens(Image.fromarray(codec.decode(data))))
    return rows
