"""`cotam chat`: a saved CoTAM folder, a stock host + codec, .cotam inputs, and one-line errors (tiny offline models)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tiny_hosts
from cotam_llava.cli import main

IMAGE = Path(__file__).resolve().parents[2] / "shared/data/kodak/kodim23.png"
QUESTION = "what is this ?"
INFO = re.compile(r"^cotam: \S+: image, (\d+) bits(?:, ([0-9.]+) bpp)?, ([0-9.]+) bpp of the coded picture, quality (\d+)$", re.M)

pytestmark = pytest.mark.skipif(not IMAGE.is_file(), reason=f"{IMAGE} not found (../shared/data/kodak)")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A saved tiny CoTAM LLaVA (cotam/), its stock host with processor (host/) and codec (codec/)."""
    root = tmp_path_factory.mktemp("chat")
    model, processor, _, stock_processor = tiny_hosts.build_cotam("llava", root)
    model.save_pretrained(root / "cotam")
    processor.save_pretrained(root / "cotam")
    stock_processor.save_pretrained(root / "host")  # build_cotam saved the stock model there
    tiny_hosts.tiny_codec().save_pretrained(root / "codec")
    return {"root": root, "cotam": root / "cotam", "host": root / "host", "codec": root / "codec",
            "processor": processor, "stock_processor": stock_processor, "tower": model.vision_tower.cotam_config}


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("cotam: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_chat_saved_cotam_folder_on_an_image(folders, capsys):
    assert main(["chat", "--model", str(folders["cotam"]), str(IMAGE), QUESTION, "--max-new-tokens", "4"]) == 0
    out, err = capsys.readouterr()
    assert out.strip()
    bits, bpp, _, quality = INFO.search(err).groups()
    assert int(bits) > 0 and int(quality) == folders["tower"].quality
    assert float(bpp) == pytest.approx(int(bits) / (768 * 512), abs=1e-4)  # bits over the input's pixels


def test_chat_cotam_file_answers_like_the_image(folders, tmp_path, capsys):
    data = folders["processor"].encode_images([IMAGE], quality=3)[0]
    stream = tmp_path / "kodim23.cotam"
    stream.write_bytes(data)
    args = ["--model", str(folders["cotam"]), QUESTION, "--max-new-tokens", "5", "--no-stream"]
    assert main(["chat", str(stream), *args]) == 0
    from_file = capsys.readouterr()
    assert main(["chat", str(IMAGE), *args, "--quality", "3"]) == 0
    from_image = capsys.readouterr()
    assert from_file.out.strip() and from_file.out == from_image.out  # greedy decoding of the same bitstream
    file_bits, file_bpp, file_coded, file_q = INFO.search(from_file.err).groups()
    image_bits, _, image_coded, image_q = INFO.search(from_image.err).groups()
    assert file_bpp is None and file_coded == image_coded  # a .cotam alone knows only the coded picture
    assert int(file_bits) == int(image_bits) == 8 * len(data) and file_q == image_q == "3"


def test_chat_stock_host_with_codec(folders, capsys):
    argv = ["chat", "--model", str(folders["host"]), "--cotam", str(folders["codec"]), str(IMAGE), QUESTION,
            "--max-new-tokens", "4", "--device", "cpu", "--dtype", "float32"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip() and INFO.search(err)


def test_chat_library_api(folders, tmp_path):
    from cotam_llava.models import CoTAMProcessor
    from cotam_llava.models.chat import ChatResult, chat
    from cotam_llava.models.loading import load_cotam

    model, processor = load_cotam(str(folders["cotam"]), device="cpu")
    assert isinstance(processor, CoTAMProcessor) and processor.edge.codec is model.codec
    result = chat(model, processor, IMAGE, QUESTION, quality=2, max_new_tokens=3, stream=False)
    assert isinstance(result, ChatResult) and result.kind == "image" and result.quality == 2
    assert result.bits > 0 and result.bpp == pytest.approx(result.bits / (768 * 512))
    # the same stream sent as a .cotam: the photo is unknown there, so only the coded picture's rate is given,
    # and it is the same number for both inputs (one definition, docs/bitstream.md "Rate")
    stream = tmp_path / "edge.cotam"
    stream.write_bytes(processor.encode_images([IMAGE], quality=2)[0])
    from_stream = chat(model, processor, stream, QUESTION, max_new_tokens=3, stream=False)
    assert from_stream.bits == result.bits and from_stream.bpp is None
    assert from_stream.bpp_coded == pytest.approx(result.bpp_coded) and result.bpp_coded > result.bpp


def test_chat_stock_host_without_codec_says_pass_cotam(folders, monkeypatch, capsys):
    import cotam_llava.shipped as shipped_module

    monkeypatch.delenv("COTAM_CHECKPOINT", raising=False)
    monkeypatch.setattr(shipped_module, "shipped", lambda name: None)
    assert main(["chat", "--model", str(folders["host"]), str(IMAGE), QUESTION]) == 1
    assert "--cotam" in _one_error_line(capsys.readouterr().err)


def test_chat_errors_are_one_line(folders, tmp_path, capsys):
    from cotam_llava.models import CoTAMProcessor

    model = str(folders["cotam"])
    assert main(["chat", "--model", model, str(tmp_path / "missing.png"), QUESTION]) == 1
    assert "input not found" in _one_error_line(capsys.readouterr().err)

    assert main(["chat", "--model", str(tmp_path / "no-model"), str(IMAGE), QUESTION]) == 1
    assert "model folder not found" in _one_error_line(capsys.readouterr().err)

    assert main(["chat", "--model", str(folders["host"]), "--cotam", str(tmp_path / "no-codec"), str(IMAGE), QUESTION]) == 1
    assert "no codec checkpoint" in _one_error_line(capsys.readouterr().err)

    other = CoTAMProcessor(folders["stock_processor"], folders["tower"], tiny_hosts.tiny_codec(seed=1))
    foreign = tmp_path / "foreign.cotam"
    foreign.write_bytes(other.encode_images([IMAGE])[0])
    assert main(["chat", "--model", model, str(foreign), QUESTION, "--max-new-tokens", "2"]) == 1
    assert "codec" in _one_error_line(capsys.readouterr().err).lower()


def test_chat_help_names_the_input_kinds(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in ("INPUT", "image file", "video file", ".cotam", "--cotam", "--no-stream"):
        assert word in text


def test_chat_library_video_on_onevision(tmp_path):
    """Video (file and .cotam of frames) through chat() on an in-memory OneVision (its processor cannot be saved here)."""
    from cotam_llava.models.chat import chat

    clip = IMAGE.parents[1] / "video" / "bikes.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not found")
    model, processor, _, _ = tiny_hosts.build_cotam("onevision", tmp_path)
    from_file = chat(model, processor, clip, QUESTION, quality=2, frames=1, max_new_tokens=3, stream=False)
    assert from_file.kind == "video" and from_file.items == 1 and from_file.bpp is None and from_file.quality == 2
    stream = tmp_path / "bikes.cotam"
    stream.write_bytes(processor.encode_videos([clip], num_frames=1, quality=2)[0])
    from_bits = chat(model, processor, stream, QUESTION, max_new_tokens=3, stream=False)
    assert (from_bits.answer, from_bits.bits, from_bits.kind) == (from_file.answer, from_file.bits, "video")


def test_encode_for_a_model_is_what_its_processor_codes(folders, tmp_path, capsys):
    """`cotam encode --model FOLDER` writes the processor's own bitstream, bit for bit (crop, canvas, quality)."""
    out = tmp_path / "edge.cotam"
    assert main(["encode", str(IMAGE), "-o", str(out), "--model", str(folders["cotam"]), "--quality", "2", "--quiet"]) == 0
    assert out.read_bytes() == folders["processor"].encode_images([IMAGE], quality=2)[0]
    default = tmp_path / "default.cotam"
    assert main(["encode", str(IMAGE), "-o", str(default), "--model", str(folders["cotam"]), "--quiet"]) == 0
    assert default.read_bytes() == folders["processor"].encode_images([IMAGE])[0]  # the model's own quality

    assert main(["encode", str(IMAGE), "-o", str(out), "--model", str(folders["cotam"]), "--canvas", "256"]) == 1
    assert "drop --canvas" in _one_error_line(capsys.readouterr().err)
    assert main(["encode", str(IMAGE), str(IMAGE), "-o", str(out), "--model", str(folders["cotam"])]) == 1
    assert "give -o a folder" in _one_error_line(capsys.readouterr().err)
