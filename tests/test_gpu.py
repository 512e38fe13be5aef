"""Cross-device decoding on a CUDA GPU. A stream encoded on the CPU in fixed-point entropy arithmetic (the default)
decodes bit for bit on the GPU; a float stream decodes to the same symbols or the decoder says it cannot
(SymbolMismatchError), never a silently different picture. Runs only where CUDA is present; the whole-Kodak
measurement is ``python eval/cross_device.py --targets cuda``."""
from __future__ import annotations

import copy

import pytest
import torch

from cotam_llava.codec import pipeline
from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.errors import SymbolMismatchError
from cotam_llava.shipped import default_codec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _coded(codec, image, quality, arithmetic):
    codec = copy.deepcopy(codec)
    codec.set_entropy_arithmetic(arithmetic)
    encoded = pipeline.encode_item(codec, image, quality)
    return codec, pipeline.pack(codec, [encoded.item]), encoded.latent.y_hat


@pytest.mark.parametrize("quality", [0, 5, 9])
def test_fixed_point_streams_decode_bit_for_bit_on_cuda(kodak_image, quality):
    codec, data, reference = _coded(CoTAMELIC.from_pretrained(default_codec()), kodak_image, quality, "fixed")
    decoded = pipeline.decode(codec.to("cuda"), data)[0]
    assert torch.equal(decoded.y_hat.cpu(), reference)


def test_float_streams_decode_or_are_refused_on_cuda(tiny_codec, synthetic_image):
    codec, data, reference = _coded(tiny_codec, synthetic_image, 5, "float")
    try:
        decoded = pipeline.decode(codec.to("cuda"), data)[0]
    except SymbolMismatchError:
        return  # detected: the checksum caught a cross-device difference
    assert torch.allclose(decoded.y_hat.cpu(), reference, atol=1e-4)  # same symbols; the means' rounding may differ
