"""CoTAM over a standard base (issue 20, item 2): the adapter reads the decoded picture through a pixel stem.

A hevc tower with a zero adapter gives the stock encoder's tokens of the decoded picture; trained, the adapter
lowers the multi-level loss; it saves, loads and runs in a CoTAM model that generates from a real hevc bitstream.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_adapter_training_folder
from PIL import Image

import tiny_hosts
from cotam_llava.codec.loading import is_standard_codec, load_codec
from cotam_llava.codec.pipeline import decode, encode_item, pack
from cotam_llava.codec.standard import StandardCodec
from cotam_llava.errors import ConfigError
from cotam_llava.imageio import to_pil
from cotam_llava.training.adapter_trainer import build_tower, load_encoder, train_adapter
from cotam_llava.training.arguments import AdapterTrainingArguments
from cotam_llava.training.data import PhotoCrops
from cotam_llava.training.losses import multi_level_loss
from cotam_llava.vision.adapter import LatentAdapterConfig, LatentFeatureAdapter, adapter_codec_path, read_adapter_config


@pytest.fixture(scope="module")
def hevc() -> StandardCodec:
    return StandardCodec("hevc")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    return make_adapter_training_folder(tmp_path_factory.mktemp("pixel_adapter"))


def _args(setup, out: Path, **kw) -> AdapterTrainingArguments:
    base = dict(output_dir=str(out), codec="hevc", encoder=str(setup["encoder"]), data_dirs=[str(setup["photos"])],
                val_every_nth=4, batch_size=2, max_steps=4, save_every=2, val_every=0, val_qualities=[2, 8], val_images=1,
                log_every=1, learning_rate=3e-3, lr_ramp_steps=1, warmup_fraction=0.25, guidance=True)
    base.update(kw)
    return AdapterTrainingArguments(**base)


@pytest.mark.parametrize("stem", ["conv", "patch"])
def test_the_stem_makes_features_on_the_latent_grid_and_a_fresh_adapter_adds_nothing(stem):
    adapter = LatentFeatureAdapter(LatentAdapterConfig(latent_channels=24, hidden_size=32, grid=(4, 4), num_qualities=10,
                                                       input="pixels", stem=stem))
    x = torch.rand(2, 3, 100, 130)
    features = adapter.features(x)
    assert features.shape == (2, 24, 7, 9)  # ceil(100/16), ceil(130/16): ŷ's grid
    levels = torch.full((2, 1, 7, 9), 4.0)
    assert torch.equal(adapter(torch.cat([features, levels], 1)), torch.zeros(2, 1 + 63, 32))
    features.sum().backward()  # the stem trains
    assert adapter.stem.layers[0].weight.grad.abs().sum() > 0


def test_adapter_inputs_are_validated():
    with pytest.raises(ConfigError, match="adapter input"):
        LatentAdapterConfig(latent_channels=8, hidden_size=32, grid=(4, 4), input="picture")
    with pytest.raises(ConfigError, match="adapter stem"):
        LatentAdapterConfig(latent_channels=8, hidden_size=32, grid=(4, 4), input="pixels", stem="resnet")
    latent = LatentFeatureAdapter(LatentAdapterConfig(latent_channels=8, hidden_size=32, grid=(4, 4)))
    with pytest.raises(ConfigError, match="reads the codec's latent"):
        latent.features(torch.rand(1, 3, 64, 64))


def test_a_standard_codec_saves_loads_and_is_named(tmp_path, hevc):
    assert is_standard_codec(load_codec("hevc")) and load_codec("hevc").codec_id == hevc.codec_id
    hevc.save_pretrained(tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert isinstance(loaded, StandardCodec) and loaded.kind == "hevc" and loaded.codec_id == hevc.codec_id
    doc = json.loads((tmp_path / "codec" / "config.json").read_text())
    doc["kind"] = "vvc"
    (tmp_path / "codec" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="unknown standard codec kind 'vvc'"):
        load_codec(tmp_path / "codec")
    doc["kind"], doc["codec_id"] = "hevc", "00" * 8
    (tmp_path / "codec" / "config.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="encoder build"):
        load_codec(tmp_path / "codec")


@pytest.mark.parametrize("kind", ["hevc", "av1"])
def test_a_zero_adapter_standard_tower_gives_the_stock_tokens_of_the_decoded_picture(setup, kind, kodak_image):
    codec = StandardCodec(kind)
    encoder, processor = load_encoder(str(setup["encoder"]))
    tower = build_tower(encoder, processor, codec).eval()
    assert tower.adapter.config.reads_pixels
    data = pack(codec, [encode_item(codec, kodak_image, 5, canvas=tower.cotam_config.canvas_size).item])
    decoded = decode(codec, data)[0]
    assert decoded.y_hat is None
    with torch.no_grad():
        tokens = tower(data).last_hidden_state
        pv = processor(images=[to_pil(decoded.picture)], return_tensors="pt")["pixel_values"]
        stock = encoder(pixel_values=pv).last_hidden_state
    assert torch.equal(tokens, stock)


def test_a_latent_adapter_tower_refuses_a_standard_codec(setup, hevc):
    encoder, processor = load_encoder(str(setup["encoder"]))
    tower = build_tower(encoder, processor, tiny_hosts.tiny_codec())
    with pytest.raises(ConfigError, match="hevc base has no latent"):
        tower.set_codec(hevc)


def _loss(tower, x, coded, ref_emb, ref) -> torch.Tensor:
    emb: list[torch.Tensor] = []
    out = tower.encode_images(x, 1, capture_embeddings=emb, coded=coded)
    return multi_level_loss(emb[0], out.last_hidden_state, ref_emb[0], ref.last_hidden_state, 0.1, 1.0).loss


def test_the_adapter_learns_through_the_stem_from_real_hevc_pictures(setup, hevc):
    encoder, processor = load_encoder(str(setup["encoder"]))
    tower = build_tower(encoder, processor, hevc)
    tower.encoder.requires_grad_(False)
    x = PhotoCrops(sorted(setup["photos"].glob("*.png")), 64).batch(np.random.default_rng(7), 4)
    with torch.no_grad():
        ref_emb: list[torch.Tensor] = []
        ref = tower.encode_images(x, compress=False, capture_embeddings=ref_emb)
        coded = tower.simulate(x, 1)  # real hevc pictures at level 1, coded once
    assert coded[1] is None and coded[0].shape == x.shape and not torch.equal(coded[0], x)
    before = _loss(tower, x, coded, ref_emb, ref).item()
    optimizer = torch.optim.Adam(tower.adapter.parameters(), lr=1e-3)
    for _ in range(40):
        optimizer.zero_grad()
        _loss(tower, x, coded, ref_emb, ref).backward()
        optimizer.step()
    assert tower.adapter.stem.layers[0].weight.grad.abs().sum() > 0
    assert _loss(tower, x, coded, ref_emb, ref).item() < 0.5 * before


def test_train_adapter_over_hevc_exports_a_loadable_adapter(setup, tmp_path, hevc):
    final = train_adapter(_args(setup, tmp_path / "run", max_steps=4), progress=False)
    info = read_adapter_config(final)
    assert info["codec"] == "hevc" and info["codec_id"] == hevc.codec_id.hex() and info["step"] == 4
    assert info["tower"]["adapter"]["input"] == "pixels" and info["tower"]["adapter"]["stem"] == "conv"
    assert is_standard_codec(load_codec(adapter_codec_path(final, info)))
    adapter = LatentFeatureAdapter.from_pretrained(final)
    assert adapter.config.reads_pixels and adapter.proj_out.weight.abs().sum() > 0  # it trained
    rows = json.loads((final / "validation.json").read_text())["rows"]
    assert {r["quality"] for r in rows} == {2, 8} and all(r["bpp"] > 0 for r in rows)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert len(log) == 5 and log[-1].split(",")[5] == ""  # no rate term: the standard codec is not trained


def test_standard_codec_training_arguments_are_checked(setup, tmp_path):
    with pytest.raises(ConfigError, match="standard codec"):
        _args(setup, tmp_path, finetune_codec=True, relative_loss=False)
    with pytest.raises(ConfigError, match="adapter_stem"):
        _args(setup, tmp_path, adapter_stem="vit")


def test_a_cotam_llava_generates_from_an_hevc_bitstream_and_reloads(tmp_path, hevc, kodak_image):
    from cotam_llava.models import CoTAMLlavaForConditionalGeneration, CoTAMProcessor

    model, processor, _, _ = tiny_hosts.build_cotam("llava", tmp_path, codec=hevc)
    assert model.vision_tower.adapter.config.reads_pixels
    with torch.no_grad():  # a non-zero adapter, so that save → load equality means something
        model.vision_tower.adapter.proj_out.weight.normal_(0, 0.02)
    inputs = processor(images=Image.fromarray(kodak_image), text=tiny_hosts.chat_prompt(processor), return_tensors="pt")
    assert processor.last_coded[0].bits > 0
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "codec" / "config.json").read_text())["kind"] == "hevc"
    again = CoTAMLlavaForConditionalGeneration.from_pretrained(tmp_path / "saved").eval()
    assert is_standard_codec(again.codec)
    processor2 = CoTAMProcessor.from_pretrained(tmp_path / "saved")
    inputs2 = processor2(images=Image.fromarray(kodak_image), text=tiny_hosts.chat_prompt(processor2), return_tensors="pt")
    assert torch.equal(inputs2["pixel_values"], inputs["pixel_values"])  # the same real bitstream
    with torch.no_grad():
        assert torch.equal(again(**inputs2).logits, model(**inputs).logits)


def test_load_cotam_chat_and_lmms_eval_take_the_hevc_base(tmp_path, hevc, kodak_image):
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM
    from cotam_llava.models.chat import chat
    from cotam_llava.models.loading import load_cotam

    stock, stock_proc = tiny_hosts.tiny_host("llava")
    stock.save_pretrained(tmp_path / "host")
    stock_proc.save_pretrained(tmp_path / "host")
    model, processor = load_cotam(tmp_path / "host", "hevc", device="cpu")  # a stock host + the standard base by name
    assert is_standard_codec(model.codec) and model.vision_tower.adapter.config.reads_pixels
    Image.fromarray(kodak_image).save(tmp_path / "photo.png")
    stream = tmp_path / "photo.cotam"
    stream.write_bytes(processor.encode_images([Image.fromarray(kodak_image)], quality=3)[0])
    result = chat(model, processor, stream, "what is this ?", max_new_tokens=3, stream=False)
    assert result.bits == 8 * stream.stat().st_size and isinstance(result.answer, str)
    with pytest.raises(ConfigError, match="hevc base has no latent"):  # a learned model's latent adapter cannot read hevc
        learned, _, _, _ = tiny_hosts.build_cotam("llava", tmp_path / "learned")
        learned.vision_tower.set_codec(hevc)

    lm = CoTAMLlavaLMM.from_model(model, processor, codec="cotam-noguide", quality=3)
    coded = lm._code([Image.fromarray(kodak_image)])
    assert coded.rate.bits == 8 * stream.stat().st_size  # the same real hevc container as the edge writes
    assert lm._generate([lm._prompt("what is this ?", coded)], [coded], {"max_new_tokens": 2})
