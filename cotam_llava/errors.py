"""The package's own error types.

Everything that goes wrong because of user input (a file, a bitstream, a
checkpoint, an argument) raises a subclass of :class:`CoTAMError`, so callers
(and the ``cotam`` CLI) can catch one type and print one clear line.
"""

from __future__ import annotations

__all__ = [
    "CoTAMError",
    "ConfigError",
    "CheckpointError",
    "CodecNotFinalizedError",
    "BitstreamError",
    "BitstreamTruncatedError",
    "BitstreamFormatError",
    "BitstreamLimitError",
    "ChecksumError",
    "CodecMismatchError",
    "SymbolMismatchError",
    "EntropyDecodingError",
    "ImageInputError",
]


class CoTAMError(Exception):
    """Base class of every error cotam_llava raises on bad input."""


class ConfigError(CoTAMError, ValueError):
    """A configuration has unknown keys or invalid values."""


class CheckpointError(CoTAMError):
    """A checkpoint folder is missing, incomplete or does not match its config."""


class CodecNotFinalizedError(CoTAMError, RuntimeError):
    """Entropy coding was asked of a codec whose CDF tables were never built (call ``update()``)."""


class BitstreamError(CoTAMError, ValueError):
    """Base class for every malformed or unusable ``.cotam`` bitstream."""


class BitstreamTruncatedError(BitstreamError):
    """The stream ends before a field or payload it announces."""


class BitstreamFormatError(BitstreamError):
    """Wrong magic, unknown version, or a field with an invalid value."""


class BitstreamLimitError(BitstreamError):
    """A size or count in the stream exceeds the parser's configured limits."""


class ChecksumError(BitstreamError):
    """A CRC32 over the header or a payload does not match: the bytes were corrupted."""


class CodecMismatchError(BitstreamError):
    """The stream was produced by a different codec (checkpoint) than the one decoding it."""


class SymbolMismatchError(BitstreamError):
    """The decoder reconstructed different latent symbols than the encoder produced.

    This is the known cross-device failure of learned codecs (floating-point
    differences in the entropy model pick other CDFs); the output would be garbage.
    """


class EntropyDecodingError(SymbolMismatchError):
    """A rANS stream cannot have been written by the encoder with the tables the decoder uses.

    Raised by the bounds-checked decoder (``codec.rans``) before any out-of-range read: too few
    bytes for the symbols, a table index outside the tables, an over-long escape code, or a final
    state or word count that a real stream never has. Either the stream was crafted or corrupted,
    or the decoder's entropy parameters drifted from the encoder's (then the symbols differ too,
    hence the base class).
    """


class ImageInputError(CoTAMError, ValueError):
    """An input image is missing, unreadable, or of an unsupported shape."""
