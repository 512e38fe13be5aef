"""The adapter's per-level strength (``level_scale``) and ``cotam calibrate-adapter``.

Each position's enhancement is multiplied by its level's factor; calibration measures every factor on real
bitstreams and the export it writes gives, when loaded, exactly the tokens it measured for the chosen factor.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import make_adapter_training_folder

from cotam_llava.cli import main as cli_main
from cotam_llava.errors import ConfigError
from cotam_llava.evaluation.proxies import token_fidelity
from cotam_llava.imageio import list_images, to_pil
from cotam_llava.training.adapter_trainer import load_adapter_tower, train_adapter
from cotam_llava.training.arguments import AdapterTrainingArguments
from cotam_llava.training.calibrate import calibrate_level_scale, write_calibrated_adapter
from cotam_llava.vision.adapter import LatentAdapterConfig, LatentFeatureAdapter, read_adapter_config
from cotam_llava.vision.edge import EdgeEncoder, center_square


def _adapter(level_scale=None) -> LatentFeatureAdapter:
    torch.manual_seed(0)
    adapter = LatentFeatureAdapter(LatentAdapterConfig(latent_channels=8, hidden_size=32, grid=(4, 4), num_qualities=10,
                                                       num_prefix_tokens=2, level_scale=level_scale))
    torch.nn.init.normal_(adapter.proj_out.weight, std=0.1)  # a trained adapter: Δ ≠ 0
    return adapter


def _input(levels: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.cat([torch.randn(1, 8, 4, 4), levels.reshape(1, 1, 4, 4).float()], dim=1)


def test_each_position_is_scaled_by_its_levels_factor_and_the_prefix_by_their_mean():
    table = [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 0.25, 0.0]
    levels = torch.tensor([1.0] * 8 + [6.0] * 4 + [8.0] * 3 + [0.5])
    x = _input(levels)
    plain = _adapter()(x)
    scaled = _adapter(table)(x)
    factors = torch.tensor([0.5] * 8 + [2.0] * 4 + [0.25] * 3 + [0.25])  # level 0.5: halfway between 0 and 0.5
    torch.testing.assert_close(scaled[0, 2:], plain[0, 2:] * factors[:, None])
    torch.testing.assert_close(scaled[0, :2], plain[0, :2] * factors.mean())
    ones = _adapter([1.0] * 10)(x)
    torch.testing.assert_close(ones, plain)


def test_level_scale_is_validated_and_round_trips():
    config = LatentAdapterConfig(latent_channels=8, hidden_size=32, grid=(4, 4), num_qualities=3, level_scale=[0, 1, 2])
    assert config.level_scale == (0.0, 1.0, 2.0)
    again = LatentAdapterConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    for bad, match in [([1.0, 1.0], "one factor per quality level"), ([1.0, -0.5, 1.0], r"in \[0, 8\]"),
                       ([1.0, math.nan, 1.0], r"in \[0, 8\]"), (["a", 1, 1], "list of numbers")]:
        with pytest.raises(ConfigError, match=match):
            LatentAdapterConfig(latent_channels=8, hidden_size=32, grid=(4, 4), num_qualities=3, level_scale=bad)
    with pytest.raises(ConfigError, match="one factor per quality level"):
        LatentAdapterConfig(latent_channels=8, hidden_size=32, grid=(4, 4), level_scale=[1.0])  # not conditioned


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    setup = make_adapter_training_folder(tmp_path_factory.mktemp("calibrate"))
    args = AdapterTrainingArguments(
        output_dir=str(setup["root"] / "run"), codec="hevc", encoder=str(setup["encoder"]),
        data_dirs=[str(setup["photos"])], val_every_nth=4, batch_size=2, max_steps=3, save_every=3, val_every=0,
        val_images=1, log_every=1, learning_rate=3e-3, lr_ramp_steps=1, warmup_fraction=0.0, guidance=False)
    setup["adapter"] = train_adapter(args, progress=False)
    return setup


def test_the_calibrated_export_gives_the_tokens_measured_for_its_chosen_factors(trained, tmp_path):
    photos = list_images(trained["photos"])[:2]
    tower = load_adapter_tower(trained["adapter"])
    scales = (0.0, 1.0, 3.0)
    result = calibrate_level_scale(tower, photos, scales=scales, qualities=[1, 7])
    assert result.cosine.shape == (2, 3) and result.level_scale[0] == 1.0  # unmeasured levels keep 1
    assert tower.adapter.config.level_scale is None  # measuring leaves the tower as it was
    out = write_calibrated_adapter(trained["adapter"], tmp_path / "cal", result, images_from="photos")
    info = read_adapter_config(out)
    assert info["tower"]["adapter"]["level_scale"] == list(result.level_scale)
    assert json.loads((out / "calibration.json").read_text())["level_scale"] == list(result.level_scale)
    calibrated = load_adapter_tower(out)
    edge = EdgeEncoder(calibrated.codec, calibrated.cotam_config, use_guidance=False)
    for a, q in enumerate((1, 7)):
        cosines = []
        for photo in photos:
            picture = center_square(to_pil(photo))
            pv = calibrated.image_processor(images=[picture], return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                reference = calibrated.encoder(pixel_values=pv).last_hidden_state
                cosines.append(float(token_fidelity(reference, calibrated(edge.encode_image(picture, q)).last_hidden_state)[0].mean()))
        chosen = scales.index(result.level_scale[q])
        assert sum(cosines) / len(cosines) == pytest.approx(result.cosine[a, chosen], abs=1e-9)
        assert result.cosine[a, chosen] == result.cosine[a].max()
    # the ×0 column is the adapter switched off
    with torch.no_grad(), tower.variant(adapter=False):
        picture = center_square(to_pil(photos[0]))
        pv = tower.image_processor(images=[picture], return_tensors="pt")["pixel_values"]
        off = token_fidelity(tower.encoder(pixel_values=pv).last_hidden_state,
                             tower(EdgeEncoder(tower.codec, tower.cotam_config, use_guidance=False).encode_image(picture, 1)).last_hidden_state)[0]
    single = calibrate_level_scale(tower, photos[:1], scales=(0.0,), qualities=[1])
    assert single.cosine[0, 0] == pytest.approx(float(off.mean()), abs=1e-9)


def test_calibrate_adapter_cli_and_its_errors(trained, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["calibrate-adapter", str(trained["adapter"]), "--images", str(trained["photos"]), "--out", str(out),
                     "--scales", "0,1", "--qualities", "4", "--limit", "1", "--quiet"]) == 0
    assert len(read_adapter_config(out)["tower"]["adapter"]["level_scale"]) == 10
    for argv, message in [
        (["--images", "/data/kodak", "--out", str(tmp_path / "k")], "Kodak is the test set"),
        (["--images", str(tmp_path / "none"), "--out", str(tmp_path / "n")], "not a folder"),
        (["--images", str(trained["photos"]), "--out", str(out)], "exists and is not an empty folder"),
        (["--images", str(trained["photos"]), "--out", str(tmp_path / "s"), "--scales", "1,9"], r"in \[0, 8\]"),
        (["--images", str(trained["photos"]), "--out", str(tmp_path / "q"), "--qualities", "12"], r"levels must be in 0\.\.9"),
        (["--images", str(trained["photos"]), "--out", str(tmp_path / "x"), "--scales", "a"], "comma-separated numbers"),
    ]:
        assert cli_main(["calibrate-adapter", str(trained["adapter"]), *argv]) == 1
        assert re.search(message, capsys.readouterr().err)
