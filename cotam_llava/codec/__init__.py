"""The codec: variable-rate spatially adaptive ELIC, bitstream container, classical baselines.

Quick start::

    from cotam_llava.codec import CoTAMELIC, encode, decode
    codec = CoTAMELIC.from_pretrained("checkpoints/elic-small")
    data = encode(codec, "photo.png", quality=6)          # bytes of a .cotam file
    [image] = decode(codec, data)                          # DecodedImage: x̂, ŷ, quality map
"""

from .configuration import PAPER_LAMBDAS, PRESETS, CoTAMCodecConfig
from .container import Container, CodedItem, ParseLimits, ResizeMode, parse, serialize
from .model import CoTAMELIC, CodecOutput, CompressedLatent, DecompressedLatent
from .pipeline import DecodedImage, compress_image, decode, encode, iter_decode
from .quality_map import QualityMap

__all__ = [
    "CoTAMCodecConfig", "PRESETS", "PAPER_LAMBDAS", "CoTAMELIC", "CodecOutput", "CompressedLatent",
    "DecompressedLatent", "Container", "CodedItem", "ParseLimits", "ResizeMode", "parse", "serialize",
    "DecodedImage", "compress_image", "encode", "decode", "iter_decode", "QualityMap",
]
