"""Known text drawn on photos: the ground truth of the OCR proxy.

:func:`draw_text_overlay` writes one line of random words (a fixed word list, seeded)
per font size onto a copy of a photo, black on a white box so that the uncompressed
text is legible, and returns the image with the reference text and box of every line::

    overlay = draw_text_overlay(photo, font_sizes=(12, 18, 28), seed=7)
    overlay.image            # uint8 (H, W, 3), the photo with the text boxes
    overlay.lines[0].text    # 'river stone apple', drawn at 12 px in overlay.lines[0].box

The lines sit in equal horizontal bands, one per font size (top to bottom in the order
given), at a seeded random position inside their band. The font is Pillow's built-in
scalable font (``ImageFont.load_default(size=...)``, Pillow ≥ 10.1 with FreeType), so no
font file is needed and every machine draws the same pixels; DejaVu Sans is the fallback.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ConfigError, ImageInputError
from ..imageio import ImageLike, to_uint8_array

__all__ = ["WORDS", "DEFAULT_FONT_SIZES", "TextLine", "TextOverlay", "load_font", "draw_text_overlay", "image_seed"]

#: The word list the lines are drawn from: common lowercase English words, 3–8 letters.
WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "garden", "window", "yellow", "market", "silver", "forest", "candle",
    "bridge", "planet", "orange", "winter", "summer", "pocket", "ticket", "rocket", "butter", "mirror",
    "coffee", "doctor", "engine", "finger", "guitar", "hammer", "island", "jacket", "kitten", "ladder",
    "monkey", "needle", "office", "pencil", "rabbit", "salmon", "tunnel", "valley", "wallet", "zebra",
    "cloud", "dream", "field", "grape", "house", "light", "music", "night", "ocean", "paper",
    "queen", "radio", "smile", "table", "uncle", "voice", "water", "youth", "brick", "chair",
    "dance", "eagle", "flame", "glass", "heart", "juice", "knife", "lemon", "mouse", "north",
    "piano", "quiet", "robot", "sugar", "tiger", "train", "wheel", "bread", "cabin", "delta",
    "map", "sun", "cat", "dog", "red", "box", "cup", "hat", "key", "pen",
    "blue", "road", "ship", "tree", "bird", "lake", "moon", "star", "wind", "snow",
    "green", "black", "white", "purple", "number", "letter", "animal", "camera", "people", "travel",
)

#: Font sizes (pixels) the OCR proxy draws by default: small, medium and large for a 768×512 photo.
DEFAULT_FONT_SIZES: tuple[int, ...] = (12, 18, 28)

_DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@dataclass(frozen=True)
class TextLine:
    """One drawn line.

    Attributes:
        text: the reference words, single spaces between them.
        font_size: font size in pixels.
        box: (x0, y0, x1, y1) of the white box, pixels, exclusive right/bottom.
    """

    text: str
    font_size: int
    box: tuple[int, int, int, int]


@dataclass
class TextOverlay:
    """A photo with text on it.

    Attributes:
        image: uint8 (H, W, 3), the photo's size.
        lines: one :class:`TextLine` per font size, in the order given (top to bottom).
    """

    image: np.ndarray
    lines: list[TextLine] = field(default_factory=list)


@lru_cache(maxsize=32)
def load_font(size: int) -> ImageFont.FreeTypeFont:
    """A scalable TrueType font at ``size`` px: Pillow's built-in one, else DejaVu Sans.

    Raises:
        ConfigError: ``size`` < 4, or neither font can be opened (Pillow without FreeType).
    """
    if size < 4:
        raise ConfigError(f"font size must be at least 4 px, got {size}")
    font = None
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        font = None
    if not isinstance(font, ImageFont.FreeTypeFont):
        try:
            font = ImageFont.truetype(str(_DEJAVU), size)
        except OSError as exc:
            raise ConfigError(f"no scalable font available (Pillow ≥ 10.1 with FreeType, or {_DEJAVU}): {exc}") from exc
    return font


def image_seed(name: str, seed: int = 0) -> int:
    """A per-image seed that depends on the file name only (stable under ``--limit`` and reordering)."""
    return (zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1)) & 0xFFFFFFFF


def _pick_words(rng: random.Random, font: ImageFont.FreeTypeFont, max_width: int, max_words: int) -> str:
    """Random words joined by spaces, as many as fit in ``max_width`` px (at most ``max_words``, at least 1)."""
    words: list[str] = []
    for _ in range(8 * max_words):
        if len(words) == max_words:
            break
        word = rng.choice(WORDS)
        candidate = " ".join(words + [word])
        if font.getlength(candidate) <= max_width:
            words.append(word)
        elif words and rng.random() < 0.25:  # a full line: stop trying longer words now and then
            break
    if not words:
        raise ImageInputError(f"no word of the list fits in {max_width} px at {font.size} px")
    return " ".join(words)


def draw_text_overlay(
    image: ImageLike,
    font_sizes: tuple[int, ...] | list[int] = DEFAULT_FONT_SIZES,
    seed: int = 0,
    max_words: int = 4,
) -> TextOverlay:
    """Draw one line of random words per font size on a copy of ``image``.

    Args:
        image: path, PIL image, uint8 (H, W, 3) array or (1, 3, H, W) tensor.
        font_sizes: one line per size (pixels), placed in equal bands top to bottom.
        seed: seeds the words and positions (``random.Random(seed)``); use :func:`image_seed`
            for a per-image seed.
        max_words: at most this many words per line (fewer when the width runs out).

    Returns:
        :class:`TextOverlay` (the input is not modified).

    Raises:
        ImageInputError: the image is too small for the boxes or the words.
    """
    if not font_sizes:
        raise ConfigError("font_sizes is empty")
    arr = to_uint8_array(image)
    h, w = arr.shape[:2]
    rng = random.Random(seed)
    pil = Image.fromarray(arr.copy())
    draw = ImageDraw.Draw(pil)
    band = h // len(font_sizes)
    lines: list[TextLine] = []
    for i, size in enumerate(font_sizes):
        font = load_font(int(size))
        pad = max(3, int(size) // 3)
        margin = max(2, w // 64)
        text = _pick_words(rng, font, w - 2 * (pad + margin), max_words)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        box_w, box_h = (right - left) + 2 * pad, (bottom - top) + 2 * pad
        if box_h > band or box_w > w:
            raise ImageInputError(f"a {size}px line needs a {box_w}×{box_h} box; the image ({w}×{h}) has {w}×{band} bands")
        x0 = rng.randint(min(margin, w - box_w), max(min(margin, w - box_w), w - box_w - margin))
        y0 = i * band + rng.randint(0, band - box_h)
        draw.rectangle((x0, y0, x0 + box_w - 1, y0 + box_h - 1), fill=(255, 255, 255))
        draw.text((x0 + pad - left, y0 + pad - top), text, font=font, fill=(0, 0, 0))
        lines.append(TextLine(text=text, font_size=int(size), box=(x0, y0, x0 + box_w, y0 + box_h)))
    return TextOverlay(image=np.asarray(pil, dtype=np.uint8).copy(), lines=lines)
