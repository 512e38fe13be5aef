"""eval/standard_presets.py: the CRF ladder and its refusal to choose on Kodak (both metrics)."""

from __future__ import annotations

import pytest

from conftest import load_eval_script


def test_ladder_is_strictly_descending_and_follows_the_rate_curve():
    script = load_eval_script("standard_presets")
    # a rate that halves every 5 CRF: 3.2 bpp at CRF 20 … 0.1 bpp at CRF 45
    points = [{"crf": c, "bpp": 3.2 * 0.5 ** ((c - 20) / 5)} for c in range(20, 51, 5)]
    table = script.ladder(points, 0.1, 3.2)
    assert len(table) == 10 and all(b < a for a, b in zip(table, table[1:]))
    assert table[0] == 45 and table[-1] == 20  # the ends of the ladder sit on the curve's 0.1 and 3.2 bpp


@pytest.mark.parametrize("argv", [["--data", "/x/kodak"],
                                  ["--metric", "tokens", "--extra-images", "/x/Kodak"]])
def test_refuses_to_choose_on_kodak(argv, capsys):
    script = load_eval_script("standard_presets")
    with pytest.raises(SystemExit) as exc:
        script.main(argv)
    assert exc.value.code == 2 and "Kodak is the test set" in capsys.readouterr().err
