"""Cross-device decoding on a CUDA GPU: a stream encoded on the CPU decodes to the same symbols, or the decoder says
it cannot (SymbolMismatchError) — never a silently different picture. Runs only where CUDA is present."""
from __future__ import annotations

import copy

import pytest
import torch

from cotam_llava.codec import pipeline
from cotam_llava.errors import SymbolMismatchError

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_encoded_on_cpu_decoded_on_cuda(tiny_codec, synthetic_image):
    data = pipeline.encode(tiny_codec, synthetic_image, 5)
    reference = pipeline.decode(tiny_codec, data)[0]
    gpu_codec = copy.deepcopy(tiny_codec).to("cuda")
    try:
        decoded = pipeline.decode(gpu_codec, data)[0]
    except SymbolMismatchError:
        return  # detected: the checksum caught a cross-device difference
    assert torch.equal(decoded.y_hat.cpu(), reference.y_hat)
