"""eval/bench_tower.py runs end to end on the tiny size and writes well-formed results."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from conftest import load_eval_script, make_synthetic_image



def _load_script():
    return load_eval_script("bench_tower")


def test_bench_tower_tiny(tmp_path: Path) -> None:
    bench = _load_script()
    image = tmp_path / "synthetic.png"  # no dependence on ../shared/data
    Image.fromarray(make_synthetic_image(96, 128)).save(image)
    out = tmp_path / "out"
    argv = ["--sizes", "tiny", "--runs", "1", "--out", str(out), "--image", str(image), "--no-progress",
            "--min-sample-ms", "0"]
    assert bench.main(argv) == 0

    result = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().count("| tiny |") == 1
    assert {"date", "machine", "runs", "sizes"} <= result.keys()
    assert {"cpu_count", "torch", "torch_threads"} <= result["machine"].keys()
    assert result["runs"] == 1
    (row,) = result["sizes"]
    assert row["size"] == "tiny" and row["canvas"] == 64
    assert set(row["ms"]) == {"decode", "preprocess", "stock", "cotam_step", "cotam_full"}
    assert all(t > 0 for t in row["ms"].values())
    for key in ("ratio_step_over_stock", "ratio_full_over_stock", "decode_share_of_full"):
        assert row[key] > 0
    assert row["adapter_params"] > 0 and row["encoder_params"] > 0
    assert row["bitstream_bytes"] > 0
    # an untrained adapter adds nothing: the CoTAM tower reproduces the stock encoder's output
    assert row["check"]["step_vs_stock_max_abs"] == 0.0
    assert row["check"]["full_vs_stock_max_abs"] == 0.0
