"""Fixed-point entropy arithmetic (codec/exact.py): streams decode bit for bit whatever order a device adds in.

"Another device" is simulated the ways this CPU allows: every convolution of the entropy networks replaced by one
that adds its input channels in reverse chunks, oneDNN switched off (PyTorch's own kernels), one thread instead of
two. A GPU run (tests/test_gpu.py, eval/cross_device.py --targets cuda) checks the real thing where CUDA exists.
"""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cotam_llava.codec import exact, pipeline
from cotam_llava.codec.container import CodecKind, parse, serialize
from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.errors import BitstreamFormatError, ConfigError, SymbolMismatchError
from cotam_llava.shipped import default_codec


def _chunks(n: int) -> list[slice]:
    step = max(1, n // 5)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)][::-1]


def _reordered_conv2d(x, w, b, stride, padding, dilation, groups):
    assert groups == 1
    parts = [F.conv2d(x[:, c], w[:, c], None, stride, padding, dilation) for c in _chunks(x.shape[1])]
    out = sum(parts[1:], parts[0])
    return out if b is None else out + b.view(1, -1, 1, 1)


def _reordered_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    assert groups == 1
    parts = [F.conv_transpose2d(x[:, c], w[c], None, stride, padding, output_padding, 1, dilation)
             for c in _chunks(x.shape[1])]
    out = sum(parts[1:], parts[0])
    return out if b is None else out + b.view(1, -1, 1, 1)


@contextlib.contextmanager
def reordered_convolutions(monkeypatch):
    """The fixed-point convolutions of codec/exact.py, adding their input channels in reversed chunks."""
    with monkeypatch.context() as m:
        m.setattr(exact, "F", SimpleNamespace(conv2d=_reordered_conv2d, conv_transpose2d=_reordered_conv_transpose2d))
        yield


@contextlib.contextmanager
def other_arithmetic(monkeypatch):
    """Convolutions that add in another order, on PyTorch's native kernels, on one thread."""
    threads = torch.get_num_threads()
    with reordered_convolutions(monkeypatch), torch.backends.mkldnn.flags(enabled=False):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def arithmetic(codec, mode: str):
    before = codec.entropy_arithmetic
    codec.set_entropy_arithmetic(mode)
    try:
        yield codec
    finally:
        codec.set_entropy_arithmetic(before)


@pytest.fixture(scope="module")
def shipped_codec():
    path = default_codec()
    if path is None:
        pytest.skip("no shipped codec")
    return CoTAMELIC.from_pretrained(path)


def test_the_premise_float_sums_depend_on_the_order_fixed_point_ones_do_not(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 64, 5, padding=2)
    x = torch.randn(1, 128, 16, 16) * 3
    with torch.no_grad():
        plain = conv(x)
        reordered = _reordered_conv2d(x, conv.weight, conv.bias, 1, 2, 1, 1)
        assert (plain != reordered).float().mean() > 0.5  # float32: most outputs change in their last bits
        fixed = exact._FixedConv(conv)
        reference = fixed(x)
        with torch.backends.mkldnn.flags(enabled=False):
            assert torch.equal(reference, fixed(x))
        with reordered_convolutions(monkeypatch):
            assert torch.equal(reference, fixed(x))
        assert float((reference - plain).abs().max()) < 1e-3  # and it is the float result to within the grid


def test_every_sum_is_bounded_so_no_input_can_make_it_inexact(monkeypatch):
    torch.manual_seed(1)
    conv = nn.ConvTranspose2d(32, 16, 5, stride=2, padding=2, output_padding=1)
    fixed = exact._FixedConv(conv)
    per_output = fixed.weight.abs().sum(dim=(0, 2, 3)).max()
    assert float(per_output) * fixed.clamp + float(fixed.bias.abs().max()) <= 2.0 ** 53
    assert fixed.clamp >= exact.MIN_RANGE * 2.0 ** exact.ACT_BITS  # far above any real activation
    huge = torch.full((1, 32, 4, 4), 1e30)  # what a crafted stream's escape symbols could feed in
    huge[:, ::2] *= -1
    out = fixed(huge)
    assert torch.isfinite(out).all()
    with reordered_convolutions(monkeypatch):
        assert torch.equal(out, fixed(huge))


def test_weights_too_large_for_the_grid_are_refused():
    conv = nn.Conv2d(4, 4, 3)
    with torch.no_grad():
        conv.weight.fill_(1e9)
    with pytest.raises(ConfigError, match="too large for exact fixed point"):
        exact._FixedConv(conv)


def test_fixed_is_the_default_and_its_container_says_so(tiny_codec, synthetic_image):
    assert tiny_codec.entropy_arithmetic == "fixed"
    encoded = pipeline.encode_item(tiny_codec, synthetic_image, 5)
    data = pipeline.pack(tiny_codec, [encoded.item])
    container = parse(data)
    assert container.kind == CodecKind.LEARNED_FIXED and container.version == 3
    decoded = pipeline.decode(tiny_codec, data)[0]
    assert torch.equal(decoded.y_hat, encoded.latent.y_hat)
    with arithmetic(tiny_codec, "float"):  # the container, not the decoder's setting, says how to decode
        assert torch.equal(pipeline.decode(tiny_codec, data)[0].y_hat, encoded.latent.y_hat)


def test_float_streams_are_still_written_as_version_2_and_decode(tiny_codec, synthetic_image):
    with arithmetic(tiny_codec, "float"):
        encoded = pipeline.encode_item(tiny_codec, synthetic_image, 5)
        data = pipeline.pack(tiny_codec, [encoded.item])
    container = parse(data)
    assert container.kind == CodecKind.LEARNED and container.version == 2
    assert torch.equal(pipeline.decode(tiny_codec, data)[0].y_hat, encoded.latent.y_hat)


@pytest.mark.parametrize("quality", [0, 9])
def test_fixed_streams_decode_bit_for_bit_on_another_arithmetic(shipped_codec, kodak_image, monkeypatch, quality):
    encoded = pipeline.encode_item(shipped_codec, kodak_image, quality)
    data = pipeline.pack(shipped_codec, [encoded.item])
    with other_arithmetic(monkeypatch):
        decoded = pipeline.decode(shipped_codec, data)[0]
    assert torch.equal(decoded.y_hat, encoded.latent.y_hat)


def test_float_entropy_parameters_change_on_another_arithmetic(shipped_codec, kodak_image, monkeypatch):
    """What the fixed-point mode removes: the same decode in float gives other means (ŷ moves by their rounding)."""
    with arithmetic(shipped_codec, "float"):
        encoded = pipeline.encode_item(shipped_codec, kodak_image, 9)
        data = pipeline.pack(shipped_codec, [encoded.item])
        with torch.backends.mkldnn.flags(enabled=False):
            try:
                decoded = pipeline.decode(shipped_codec, data)[0]
            except SymbolMismatchError:  # the symbols themselves changed: the checksum refused the stream
                return
    assert not torch.equal(decoded.y_hat, encoded.latent.y_hat)


def test_fixed_point_costs_no_rate(shipped_codec, kodak_image):
    sizes = {}
    for mode in ("float", "fixed"):
        with arithmetic(shipped_codec, mode):
            sizes[mode] = sum(len(s) for s in pipeline.encode_item(shipped_codec, kodak_image, 5).item.streams)
    assert abs(sizes["fixed"] - sizes["float"]) <= 0.002 * sizes["float"] + 8


def test_codecs_without_a_fixed_point_form_refuse_it(tiny_codec, synthetic_image):
    dcae = CoTAMELIC.from_preset("dcae-tiny", seed=0).eval()
    dcae.finalize()
    assert dcae.entropy_arithmetic == "float" and dcae.container_kind == CodecKind.LEARNED
    with pytest.raises(ConfigError, match="no exact fixed-point form"):
        dcae.set_entropy_arithmetic("fixed")
    container = parse(pipeline.encode(dcae, synthetic_image, 5))
    container.kind = CodecKind.LEARNED_FIXED  # a crafted header: the bitstream's error, not a crash or a ConfigError
    with pytest.raises(BitstreamFormatError, match="fixed-point"):
        pipeline.decode(dcae, serialize(container))
    with pytest.raises(ConfigError, match="must be one of"):
        tiny_codec.set_entropy_arithmetic("int8")


def test_cross_device_script_counts_exact_decodes(tiny_codec, synthetic_image, tmp_path):
    import json

    from conftest import load_eval_script
    from PIL import Image

    module = load_eval_script("cross_device")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(synthetic_image).save(photos / "a.png")
    checkpoint = tiny_codec.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "out"
    assert module.main(["--images", str(photos), "--qualities", "0,9", "--checkpoint", str(checkpoint),
                        "--targets", "cpu-native,cpu-1thread", "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "cross_device.json").read_text())["summary"]
    for target in ("cpu-native", "cpu-1thread"):
        assert summary["fixed"][target]["exact"] == summary["fixed"]["items"] == 2
    assert summary["float"]["items"] == 2 and (out / "cross_device.md").is_file()
    with pytest.raises(SystemExit):
        module.main(["--images", str(photos), "--targets", "tpu"])
