"""Checkpoints, configs and CLI arguments from untrusted sources: every failure is our own error naming the culprit.

Issue 15: a cloud decoder loads codecs from hubs and takes arguments from users; a bad config, a corrupted CDF
table, a NaN weight or an absurd path must never crash, hang or allocate without bound. Tiny preset, seconds.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cotam_llava.cli import main
from cotam_llava.codec.checkpoint import MAX_CDF_ENTRIES, MAX_OFFSET, check_layout, read_safetensors_header
from cotam_llava.codec.configuration import (
    CONFIG_NAME,
    MAX_PARAMETERS,
    PAPER_LAMBDAS,
    WEIGHTS_NAME,
    CoTAMCodecConfig,
)
from cotam_llava.codec.guidance import GuidanceConfig
from cotam_llava.codec.model import CoTAMELIC
from cotam_llava.errors import CheckpointError, ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
EB = "latent_codec.hyper.entropy_bottleneck"
GC = "gaussian_conditional"  # shared by every ŷ group: its tables are stored once


# ============================================================================ config fields
BAD_FIELDS = [
    ("N", True), ("N", "16"), ("N", 16.0), ("N", None), ("N", [16]), ("N", 2048), ("N", 10**30),
    ("M", False), ("M", 32.5), ("M", 4096),
    ("hyper_channels", "16"), ("hyper_channels", 0), ("hyper_channels", 1025),
    ("groups", None), ("groups", "4,4,8,16"), ("groups", [4, 4, 8, 16.0]), ("groups", [4, 4, 8, True, 15]),
    ("groups", [[4], 4, 8, 16]), ("groups", [2] * 16 + [0]), ("groups", [1] * 17 + [15]), ("groups", []),
    ("num_res_blocks", 9), ("num_res_blocks", -1), ("num_res_blocks", True), ("num_res_blocks", 1.0),
    ("context_hidden", [16, 4096]), ("context_hidden", [16, True]), ("context_hidden", [16, 16.0]),
    ("context_hidden", [[16], 16]), ("context_hidden", "16"), ("context_hidden", [16, 16, 16]), ("context_hidden", None),
    ("num_qualities", "10"), ("num_qualities", 10.0), ("num_qualities", True),
    ("lambdas", [True] * 10), ("lambdas", ["0.1"] * 10), ("lambdas", list(range(1, 11))), ("lambdas", None),
    ("lambdas", [float("nan")] * 10), ("lambdas", [[0.1]] * 10), ("lambdas", "0.1"),
    ("attention", 1), ("attention", "true"), ("attention", None),
    ("intermediate_gains", 0), ("finalized", "yes"),
    ("preset", 5), ("preset", "x" * 1000), ("model_type", ["cotam-elic"]), ("model_type", None),
]


@pytest.mark.parametrize("field, value", BAD_FIELDS, ids=[f"{f}={str(v)[:20]}" for f, v in BAD_FIELDS])
def test_bad_config_field_is_a_config_error_naming_it(field, value):
    data = {**CoTAMCodecConfig.from_preset("tiny").to_dict(), field: value}
    with pytest.raises(ConfigError, match=field) as info:
        CoTAMCodecConfig.from_dict(data)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_parameter_budget_rejects_configs_inside_every_field_bound():
    huge = dict(N=1024, M=1024, groups=[64] * 16, hyper_channels=1024, context_hidden=[1024, 1024],
                num_res_blocks=8, attention=True)
    with pytest.raises(ConfigError, match="parameters"):
        CoTAMCodecConfig.from_preset("tiny", **huge)


def test_paper_elic_fits_the_bounds_and_the_estimate_counts_the_weights():
    assert CoTAMCodecConfig.from_preset("elic").estimated_num_parameters() < MAX_PARAMETERS / 5
    for overrides in ({}, {"attention": True}):
        model = CoTAMELIC.from_preset("tiny", seed=0, **overrides)
        estimate = model.config.estimated_num_parameters()
        assert 0.95 * model.num_parameters() <= estimate <= model.num_parameters()


def test_tuples_are_accepted_like_lists():
    cfg = CoTAMCodecConfig.from_preset("tiny", lambdas=PAPER_LAMBDAS, groups=(4, 4, 8, 16))
    assert cfg.lambdas == list(PAPER_LAMBDAS) and cfg.groups == [4, 4, 8, 16]


@pytest.mark.parametrize("quality", [float("nan"), float("inf"), "3", None, True, 10])
def test_bad_quality_is_a_config_error(quality):
    with pytest.raises(ConfigError, match="quality"):
        CoTAMCodecConfig.from_preset("tiny").check_quality(quality)


def test_strict_from_dict_turns_type_errors_into_config_errors():
    with pytest.raises(ConfigError, match="guidance"):  # GuidanceConfig compares grid with ints: a TypeError
        GuidanceConfig.from_dict({"grid": "8"})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 100_000 + "]" * 100_000, id="100000-deep"),
        pytest.param('{"N": ' + "9" * 5000 + "}", id="5000-digit-int"),
        pytest.param(" " * (1 << 20) + "{}", id="over-1MiB"),
        pytest.param("\xff{}", id="not-utf8"),
        pytest.param("[1, 2]", id="not-an-object"),
    ],
)
def test_malformed_config_json_is_a_config_error(tmp_path: Path, text: str):
    (tmp_path / CONFIG_NAME).write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError):
        CoTAMCodecConfig.load(tmp_path)


# ============================================================================ checkpoints
@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A finalized tiny checkpoint, and its tensors (do not mutate the folder)."""
    path = tmp_path_factory.mktemp("good") / "tiny"
    model = CoTAMELIC.from_preset("tiny", seed=0)
    model.finalize()
    model.save_pretrained(path)
    return path


def _write(good: Path, dst: Path, mutate: Callable[[dict[str, torch.Tensor]], None], config: dict | None = None) -> Path:
    dst.mkdir()
    state = load_file(str(good / WEIGHTS_NAME))
    mutate(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / WEIGHTS_NAME))
    if config is None:
        shutil.copyfile(good / CONFIG_NAME, dst / CONFIG_NAME)
    else:
        (dst / CONFIG_NAME).write_text(json.dumps(config))
    return dst


def _set(name: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict[str, torch.Tensor]], None]:
    def mutate(state: dict[str, torch.Tensor]) -> None:
        state[name] = value(state[name].clone())
    return mutate


def _poke(index: tuple, value) -> Callable[[torch.Tensor], torch.Tensor]:
    def change(t: torch.Tensor) -> torch.Tensor:
        t[index] = value
        return t
    return change


def _swap_row_entries(t: torch.Tensor) -> torch.Tensor:
    t[0, 2], t[0, 3] = t[0, 3].clone(), t[0, 2].clone()
    return t


CORRUPTIONS = {
    # CDF tables of the hyperprior's bottleneck and of the shared Gaussian conditional
    "cdf-1d": (f"{EB}._quantized_cdf", _set(f"{EB}._quantized_cdf", lambda t: t.reshape(-1))),
    "cdf-3d": (f"{EB}._quantized_cdf", _set(f"{EB}._quantized_cdf", lambda t: t[None])),
    "cdf-row-missing": (f"{EB}._quantized_cdf", _set(f"{EB}._quantized_cdf", lambda t: t[1:])),
    "cdf-non-monotone": (f"{EB}._quantized_cdf", _set(f"{EB}._quantized_cdf", _swap_row_entries)),
    "gc-cdf-non-monotone": (f"{GC}._quantized_cdf", _set(f"{GC}._quantized_cdf", _swap_row_entries)),
    "cdf-flat-step": (f"{EB}._quantized_cdf", _set(f"{EB}._quantized_cdf", lambda t: _poke((3, 2), int(t[3, 1]))(t))),
    "cdf-not-from-0": (f"{EB}._quantized_cdf", _set(f"{EB}._quantized_cdf", _poke((2, 0), 1))),
    "cdf-not-to-65536": (f"{GC}._quantized_cdf", _set(f"{GC}._quantized_cdf", lambda t: _poke((0, 4), 65535)(t))),
    "cdf-random": (f"{EB}._quantized_cdf",
                   _set(f"{EB}._quantized_cdf", lambda t: torch.randint(-2**31, 2**31 - 1, t.shape, dtype=torch.int32,
                                                                          generator=torch.Generator().manual_seed(0)))),
    "cdf-zeros": (f"{GC}._quantized_cdf", _set(f"{GC}._quantized_cdf", torch.zeros_like)),
    "cdf-int64": (f"{EB}._quantized_cdf", _set(f"{EB}._quantized_cdf", lambda t: t.long())),
    "length-zero": (f"{EB}._cdf_length", _set(f"{EB}._cdf_length", _poke((0,), 0))),
    "length-negative": (f"{GC}._cdf_length", _set(f"{GC}._cdf_length", _poke((5,), -7))),
    "length-short": (f"{EB}._cdf_length", _set(f"{EB}._cdf_length", _poke((1,), 2))),
    "length-past-row": (f"{EB}._cdf_length", _set(f"{EB}._cdf_length", lambda t: _poke((1,), t.numel() + 10**6)(t))),
    "length-huge": (f"{GC}._cdf_length", _set(f"{GC}._cdf_length", _poke((0,), 2**31 - 1))),
    "length-count": (f"{EB}._cdf_length", _set(f"{EB}._cdf_length", lambda t: t[:-1])),
    "length-2d": (f"{EB}._cdf_length", _set(f"{EB}._cdf_length", lambda t: t[:, None])),
    "offset-huge": (f"{EB}._offset", _set(f"{EB}._offset", _poke((0,), 2**30))),
    "offset-huge-negative": (f"{GC}._offset", _set(f"{GC}._offset", _poke((3,), -(MAX_OFFSET + 1)))),
    "offset-count": (f"{GC}._offset", _set(f"{GC}._offset", lambda t: torch.cat([t, t]))),
    "scale-table-descending": (f"{GC}.scale_table", _set(f"{GC}.scale_table", lambda t: t.flip(0))),
    "scale-table-zero": (f"{GC}.scale_table", _set(f"{GC}.scale_table", _poke((0,), 0.0))),
    "scale-table-short": (f"{GC}._quantized_cdf", _set(f"{GC}.scale_table", lambda t: t[:-1])),
    "scale-table-nan": (f"{GC}.scale_table", _set(f"{GC}.scale_table", _poke((7,), float("nan")))),
    # weights
    "weight-nan": ("g_a.0.0.weight", _set("g_a.0.0.weight", _poke((0, 0, 0, 0), float("nan")))),
    "weight-inf": ("g_s.3.0.weight", _set("g_s.3.0.weight", _poke((0, 0, 0, 0), float("inf")))),
    "gain-minus-inf": ("gain_y.gain", _set("gain_y.gain", _poke((0, 0), float("-inf")))),
    "quantiles-nan": (f"{EB}.quantiles", _set(f"{EB}.quantiles", _poke((0, 0, 1), float("nan")))),
    "weight-float64": ("g_a.0.0.weight", _set("g_a.0.0.weight", lambda t: t.double())),
    "weight-float16": ("g_s.0.0.bias", _set("g_s.0.0.bias", lambda t: t.half())),
    "weight-shape": ("g_a.0.0.bias", _set("g_a.0.0.bias", lambda t: torch.cat([t, t]))),
    "tensor-missing": ("gain_y_inv.gain", lambda state: state.pop("gain_y_inv.gain")),
    "tensor-extra": ("g_a.9.weight", lambda state: state.update({"g_a.9.weight": torch.zeros(3)})),
}


@pytest.fixture(scope="module")
def loaded(good: Path) -> CoTAMELIC:
    """The good checkpoint, loaded once: a failed ``load_canonical_state`` leaves it untouched."""
    return CoTAMELIC.from_pretrained(good)


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupted_state_is_a_checkpoint_error_naming_the_tensor(good: Path, loaded: CoTAMELIC, case: str):
    name, mutate = CORRUPTIONS[case]
    state = load_file(str(good / WEIGHTS_NAME))
    mutate(state)
    with pytest.raises(CheckpointError, match=re.escape(name)) as info:
        loaded.load_canonical_state(state)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "case", ["cdf-3d", "cdf-non-monotone", "length-huge", "offset-huge", "scale-table-short", "weight-nan",
             "cdf-int64", "weight-shape", "tensor-missing", "tensor-extra"]
)
def test_corrupted_checkpoint_file_is_a_checkpoint_error_naming_the_tensor(good: Path, tmp_path: Path, case: str):
    name, mutate = CORRUPTIONS[case]
    ckpt = _write(good, tmp_path / "ckpt", mutate)
    with pytest.raises(CheckpointError, match=re.escape(name)):
        CoTAMELIC.from_pretrained(ckpt)


def test_failed_load_leaves_the_model_untouched(good: Path, loaded: CoTAMELIC):
    before = loaded.codec_id
    state = load_file(str(good / WEIGHTS_NAME))
    state["g_a.0.0.weight"] = torch.zeros_like(state["g_a.0.0.weight"])
    state[f"{EB}._offset"][0] = 2**30
    with pytest.raises(CheckpointError, match="_offset"):
        loaded.load_canonical_state(state)
    loaded._codec_id = None  # recompute from the tensors
    assert loaded.codec_id == before


def test_finalized_config_needs_its_cdf_tables(good: Path, tmp_path: Path):
    def strip(state: dict[str, torch.Tensor]) -> None:
        for prefix in (EB, GC):
            for buffer in ("_quantized_cdf", "_cdf_length", "_offset"):
                state[f"{prefix}.{buffer}"] = torch.zeros(0, dtype=torch.int32)

    with pytest.raises(CheckpointError, match="finalized"):
        CoTAMELIC.from_pretrained(_write(good, tmp_path / "stripped", strip))
    unfinalized = {**json.loads((good / CONFIG_NAME).read_text()), "finalized": False}
    model = CoTAMELIC.from_pretrained(_write(good, tmp_path / "raw", strip, config=unfinalized))
    assert not model.is_finalized

    def half(state: dict[str, torch.Tensor]) -> None:
        state[f"{EB}._quantized_cdf"] = torch.zeros(0, dtype=torch.int32)

    with pytest.raises(CheckpointError, match=re.escape(f"{EB}._quantized_cdf")):
        CoTAMELIC.from_pretrained(_write(good, tmp_path / "half", half, config=unfinalized))


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"N": 4096, "M": 4096}, id="N=M=4096"),
        pytest.param({"context_hidden": [16, 10**6]}, id="huge-context"),
        pytest.param({"N": "16"}, id="N-string"),
        pytest.param({"lambdas": [1] * 10}, id="int-lambdas"),
    ],
)
def test_bad_config_in_a_checkpoint_is_a_config_error(good: Path, tmp_path: Path, config: dict):
    data = {**json.loads((good / CONFIG_NAME).read_text()), **config}
    ckpt = _write(good, tmp_path / "ckpt", lambda state: None, config=data)
    with pytest.raises(ConfigError, match=CONFIG_NAME):
        CoTAMELIC.from_pretrained(ckpt)


def _raw_header_file(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


@pytest.mark.parametrize(
    "header, length",
    [
        pytest.param(b"{}", 1 << 40, id="huge-header-length"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, None, id="deep-header"),
        pytest.param(b'{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', None, id="negative-dim"),
        pytest.param(b'{"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}', None, id="unknown-dtype"),
        pytest.param(b'{"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}', None, id="past-the-file"),
        pytest.param(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', None, id="wrong-byte-count"),
        pytest.param(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}', None, id="extra-field"),
    ],
)
def test_malformed_safetensors_header_is_a_checkpoint_error(tmp_path: Path, header: bytes, length: int | None):
    path = _raw_header_file(tmp_path / WEIGHTS_NAME, header, b"\0" * 4, length)
    with pytest.raises(CheckpointError):
        read_safetensors_header(path)


def test_truncated_weights_file_is_a_checkpoint_error(good: Path, tmp_path: Path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good, ckpt)
    data = (ckpt / WEIGHTS_NAME).read_bytes()
    (ckpt / WEIGHTS_NAME).write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="cover"):
        CoTAMELIC.from_pretrained(ckpt)


def test_a_wrong_layout_is_refused_before_the_model_is_built(good: Path, tmp_path: Path, monkeypatch):
    """Names and shapes are compared against a layout built on the meta device: no real model is allocated."""
    built = []
    real_init = CoTAMELIC.__init__

    def counting_init(self, config):
        real_init(self, config)
        built.append(self.gain_y.gain.device.type)

    monkeypatch.setattr(CoTAMELIC, "__init__", counting_init)
    name = next(n for n in load_file(str(good / WEIGHTS_NAME)) if n.endswith("weight"))
    bad = _write(good, tmp_path / "bad", _set(name, lambda t: t.new_zeros(t.shape[0] + 1, *t.shape[1:])))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        CoTAMELIC.from_pretrained(bad)
    assert built == ["meta"]
    CoTAMELIC.from_pretrained(good)
    assert built == ["meta", "meta", "cpu"]


def test_oversized_cdf_tables_are_rejected_from_the_header_alone(loaded: CoTAMELIC):
    """A header may announce tables far larger than anything update() makes: refused before reading them."""
    own = loaded.canonical_state()
    found = {name: (t.dtype, tuple(t.shape)) for name, t in own.items()}
    for shape in [(16, MAX_CDF_ENTRIES), (10**6, 23), (16, 2)]:
        with pytest.raises(CheckpointError, match=re.escape(f"{EB}._quantized_cdf")):
            check_layout(own, {**found, f"{EB}._quantized_cdf": (torch.int32, shape)}, "crafted")
    with pytest.raises(CheckpointError, match=re.escape(f"{GC}.scale_table")):
        check_layout(own, {**found, f"{GC}.scale_table": (torch.float32, (10**6,))}, "crafted")


def test_shipped_and_fresh_checkpoints_pass(good: Path):
    for path in (good, REPO_ROOT / "checkpoints" / "elic-small"):
        if not (path / WEIGHTS_NAME).is_file():
            pytest.skip(f"{path} is not present")
        model = CoTAMELIC.from_pretrained(path)
        assert model.is_finalized and model.config.finalized


# ============================================================================ CLI
@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "img.png"
    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)).save(path)
    return path


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cotam: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    return {"file": tmp_path / "a_file", "dir": tmp_path / "a_dir", "tmp": tmp_path}


@pytest.mark.parametrize(
    "make_argv, expected",
    [
        pytest.param(lambda f, img, ck: ["encode", img, "-o", f"{f['file']}/x.cotam", "--checkpoint", ck], "not a folder",
                     id="encode-below-a-file"),
        pytest.param(lambda f, img, ck: ["encode", img, "-o", str(f["dir"]), "--checkpoint", ck], "is a folder",
                     id="encode-into-a-folder"),
        pytest.param(lambda f, img, ck: ["encode", img, img, "-o", str(f["file"]), "--checkpoint", ck], "is a file",
                     id="encode-many-into-a-file"),
        pytest.param(lambda f, img, ck: ["encode", img, "-o", "/proc/x.cotam", "--checkpoint", ck, "-q"], "/proc/x.cotam",
                     id="encode-unwritable"),
        pytest.param(lambda f, img, ck: ["encode", img, "-o", str(f["tmp"] / "o.cotam"), "--canvas", "64x64x64"],
                     "--canvas", id="canvas-3d"),
        pytest.param(lambda f, img, ck: ["encode", img, "-o", str(f["tmp"] / "o.cotam"), "--canvas", "1" * 5000],
                     "--canvas", id="canvas-5000-digits"),
        pytest.param(lambda f, img, ck: ["encode", img, "-o", str(f["tmp"] / "o.cotam"), "--tiles", "99x1"],
                     "--tiles", id="tiles-99"),
        pytest.param(lambda f, img, ck: ["decode", img, "-o", str(f["dir"]), "--checkpoint", ck], "is a folder",
                     id="decode-into-a-folder"),
        pytest.param(lambda f, img, ck: ["decode", img, "-o", f"{f['file']}/x.png", "--checkpoint", ck], "not a folder",
                     id="decode-below-a-file"),
        pytest.param(lambda f, img, ck: ["decode", str(f["dir"]), "-o", str(f["tmp"] / "x.png"), "--checkpoint", ck],
                     "not a file", id="decode-a-folder"),
        pytest.param(lambda f, img, ck: ["decode", img, "-o", str(f["tmp"] / "x.png"), "--max-pixels", "0"],
                     "--max-pixels", id="max-pixels-0"),
        pytest.param(lambda f, img, ck: ["info", str(f["dir"])], "not a file", id="info-a-folder"),
        pytest.param(lambda f, img, ck: ["init-codec", str(f["file"])], "is a file", id="init-codec-into-a-file"),
        pytest.param(lambda f, img, ck: ["init-codec", f"{f['file']}/sub"], "not a folder", id="init-codec-below-a-file"),
        pytest.param(lambda f, img, ck: ["bench", str(f["dir"]), "--out", f"{f['file']}/b"], "not a folder",
                     id="bench-below-a-file"),
        pytest.param(lambda f, img, ck: ["guidance", img, "-o", f"{f['file']}/g.png"], "not a folder",
                     id="guidance-below-a-file"),
        pytest.param(lambda f, img, ck: ["encode", img, "-o", str(f["tmp"] / "o.cotam"), "--checkpoint", str(f["file"])],
                     "does not exist", id="checkpoint-a-file"),
    ],
)
def test_cli_bad_paths_and_arguments_are_one_line_errors(capsys, files, image, good, make_argv, expected):
    assert expected in _one_line_error(capsys, make_argv(files, str(image), str(good)))


@pytest.mark.parametrize(
    "grid",
    [
        pytest.param("[[100000000000000000000000]]", id="10**23"),
        pytest.param("[[" + "9" * 5000 + "]]", id="5000-digits"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="100000-deep"),
        pytest.param("[[1, 2], [3]]", id="ragged"),
        pytest.param("[[1, true]]", id="bool"),
        pytest.param("[[1.5]]", id="float"),
        pytest.param("[[-1]]", id="negative"),
        pytest.param("[]", id="empty"),
        pytest.param("[[]]", id="empty-row"),
        pytest.param('{"a": 1}', id="object"),
        pytest.param("[[" + ", ".join(["1"] * 300) + "]]", id="300-columns"),
        pytest.param("[[1]" + " " * (1 << 20) + "]", id="over-1MiB"),
    ],
)
def test_cli_absurd_quality_maps_are_one_line_errors(capsys, files, image, good, grid):
    path = files["tmp"] / "map.json"
    path.write_text(grid)
    _one_line_error(capsys, ["encode", str(image), "-o", str(files["tmp"] / "o.cotam"), "--checkpoint", str(good),
                             "--quality-map", str(path)])


def test_cli_bad_checkpoint_is_a_one_line_error(capsys, files, image, good):
    ckpt = _write(good, files["tmp"] / "nan", _set("g_a.0.0.weight", _poke((0, 0, 0, 0), float("nan"))))
    line = _one_line_error(capsys, ["encode", str(image), "-o", str(files["tmp"] / "o.cotam"), "--checkpoint", str(ckpt)])
    assert "g_a.0.0.weight" in line
    data = {**json.loads((good / CONFIG_NAME).read_text()), "N": 4096, "M": 4096}
    (files["tmp"] / "nan" / CONFIG_NAME).write_text(json.dumps(data))
    line = _one_line_error(capsys, ["encode", str(image), "-o", str(files["tmp"] / "o.cotam"), "--checkpoint", str(ckpt)])
    assert "N must be" in line


def test_cli_good_arguments_still_work(capsys, files, image, good):
    out = files["tmp"] / "new" / "deeper" / "o.cotam"
    grid = files["tmp"] / "map.json"
    grid.write_text("[[3, 5], [7, 9]]")
    assert main(["encode", str(image), "-o", str(out), "--checkpoint", str(good), "--canvas", "128x64",
                 "--quality-map", str(grid), "-q"]) == 0
    assert main(["decode", str(out), "-o", str(files["tmp"] / "dec" / "x.png"), "--checkpoint", str(good), "-q"]) == 0
    assert Image.open(files["tmp"] / "dec" / "x.png").size == (64, 64)
