"""CoTAM-enabled LLaVA, LLaVA-OneVision and InternVL on tiny random models: bitstreams in, text out."""

from __future__ import annotations

import json

import importlib.util

import numpy as np
import pytest
import torch

import tiny_hosts
from conftest import DATA_DIR, KODAK_DIR
from cotam_llava.codec.pipeline import decode
from cotam_llava.errors import CodecMismatchError, ConfigError, ImageInputError
from cotam_llava.imageio import to_pil
from cotam_llava.models import CoTAMProcessor
from cotam_llava.codec.transport import unpack_bitstreams
from cotam_llava.vision.tower import CoTAMVisionTower

DATA = DATA_DIR
KODAK = KODAK_DIR


@pytest.fixture(autouse=True)
def _kodak(kodak_dir):
    """These tests read Kodak photos: skip cleanly (conftest's fixture) when ../shared/data is absent."""


@pytest.fixture(scope="module", params=tiny_hosts.HOSTS)
def host(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model, proc, stock, stock_proc = tiny_hosts.build_cotam(request.param, folder)
    return request.param, folder, model, proc, stock, stock_proc


def _stock_inputs(name, stock_proc, prompt, pictures):
    kwargs = {"crop_to_patches": False} if name == "internvl" else {}
    return stock_proc(text=prompt, images=[to_pil(p) for p in pictures], return_tensors="pt", **kwargs)


def test_generates_from_a_bitstream_and_equals_the_stock_model_on_the_decoded_picture(host):
    name, _, model, proc, stock, stock_proc = host
    assert isinstance(model.model.vision_tower, CoTAMVisionTower)
    prompt = tiny_hosts.chat_prompt(proc)
    inputs = proc(text=prompt, images=[KODAK / "kodim23.png"], quality=5)
    assert inputs["pixel_values"].dtype == torch.uint8
    with torch.no_grad():
        logits = model(**inputs).logits
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)

    picture = decode(model.codec, unpack_bitstreams(inputs["pixel_values"])[0])[0].picture
    stock_inputs = _stock_inputs(name, stock_proc, prompt, [picture])
    assert torch.equal(stock_inputs["input_ids"], inputs["input_ids"])  # same image-token expansion
    with torch.no_grad():
        ref = stock(**stock_inputs).logits
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)


def test_save_and_load_give_the_same_logits(host):
    name, folder, model, proc, _, _ = host
    inputs = proc(text=tiny_hosts.chat_prompt(proc), images=[KODAK / "kodim23.png"], quality=5)
    torch.nn.init.normal_(model.vision_tower.adapter.proj_out.weight, std=0.05)  # a "trained" adapter
    try:
        model.save_pretrained(folder / "cotam")
        assert {"config.json", "model.safetensors", "codec"} <= {p.name for p in (folder / "cotam").iterdir()}
        loaded = type(model).from_pretrained(folder / "cotam").eval()
        with torch.no_grad():
            a, b = model(**inputs).logits, loaded(**inputs).logits
    finally:
        torch.nn.init.zeros_(model.vision_tower.adapter.proj_out.weight)
    assert loaded.codec.codec_id == model.codec.codec_id
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_auto_classes_load_a_saved_folder(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, proc, _, _ = tiny_hosts.build_cotam("llava", tmp_path)
    model.save_pretrained(tmp_path / "cotam")
    proc.save_pretrained(tmp_path / "cotam")
    auto_model = AutoModelForImageTextToText.from_pretrained(tmp_path / "cotam").eval()
    auto_proc = AutoProcessor.from_pretrained(tmp_path / "cotam")
    assert type(auto_model) is type(model) and isinstance(auto_proc, CoTAMProcessor)
    inputs = auto_proc(text=tiny_hosts.chat_prompt(auto_proc), images=[KODAK / "kodim23.png"], quality=5)
    with torch.no_grad():
        torch.testing.assert_close(auto_model(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)


def test_a_trained_adapter_folder_of_any_depth_loads_with_the_host(tmp_path):
    from safetensors.torch import save_file

    from cotam_llava.errors import CheckpointError
    from cotam_llava.models import cotam_class_for
    from cotam_llava.vision.adapter import LatentAdapterConfig, LatentFeatureAdapter

    model, proc, _, _ = tiny_hosts.build_cotam("llava", tmp_path)
    config = LatentAdapterConfig.from_dict({**model.vision_tower.adapter.config.to_dict(), "num_layers": 2})
    trained = LatentFeatureAdapter(config)
    torch.nn.init.normal_(trained.proj_out.weight, std=0.05)
    (tmp_path / "adapter").mkdir()
    save_file(trained.state_dict(), str(tmp_path / "adapter" / "adapter.safetensors"))
    cls = cotam_class_for("llava")
    loaded = cls.from_host_pretrained(tmp_path / "host", model.codec, image_processor=proc.image_processor,
                                      adapter=tmp_path / "adapter").eval()
    assert len(loaded.vision_tower.adapter.blocks) == 2
    assert all(torch.equal(a, b) for a, b in zip(loaded.vision_tower.adapter.state_dict().values(),
                                                   trained.state_dict().values()))
    loaded.save_pretrained(tmp_path / "cotam")  # the depth travels in the saved config
    inputs = proc(text=tiny_hosts.chat_prompt(proc), images=[KODAK / "kodim23.png"], quality=5)
    with torch.no_grad():
        torch.testing.assert_close(cls.from_pretrained(tmp_path / "cotam").eval()(**inputs).logits,
                                   loaded(**inputs).logits, rtol=0, atol=0)
    # a calibrated export's per-level factors (adapter_config.json, `cotam calibrate-adapter`) come along and are saved
    scale = [0.25 + 0.1 * q for q in range(loaded.vision_tower.adapter.config.num_qualities)]
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"tower": {"adapter": {"level_scale": scale}}}))
    scaled = cls.from_host_pretrained(tmp_path / "host", model.codec, image_processor=proc.image_processor,
                                      adapter=tmp_path / "adapter").eval()
    assert scaled.vision_tower.adapter.config.level_scale == pytest.approx(scale)
    scaled.save_pretrained(tmp_path / "scaled")
    assert cls.from_pretrained(tmp_path / "scaled").vision_tower.adapter.config.level_scale == pytest.approx(scale)
    with torch.no_grad():
        assert not torch.equal(scaled(**inputs).logits, loaded(**inputs).logits)
    save_file({"proj_in.weight": torch.zeros(3, 3)}, str(tmp_path / "adapter" / "adapter.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit"):
        cls.from_host_pretrained(tmp_path / "host", model.codec, image_processor=proc.image_processor,
                                 adapter=tmp_path / "adapter")


@pytest.mark.parametrize("name", ["llava", "onevision"])
def test_a_batch_of_two_images_of_different_sizes(name, tmp_path):
    model, proc, stock, stock_proc = tiny_hosts.build_cotam(name, tmp_path)
    proc.tokenizer.padding_side = "left"
    prompts = [tiny_hosts.chat_prompt(proc)] * 2
    images = [to_pil(KODAK / "kodim01.png").resize((200, 80)), KODAK / "kodim23.png"]
    inputs = proc(text=prompts, images=images, quality=4, padding=True)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 2
    # each row equals the model run on that image alone
    for i in range(2):
        single = proc(text=prompts[i], images=[images[i]], quality=4)
        with torch.no_grad():
            alone = model(**single).logits[0, -1]
            batched = model(**inputs).logits[i, -1]
        torch.testing.assert_close(alone, batched, rtol=1e-4, atol=1e-4)


def test_onevision_video_from_one_container(tmp_path):
    model, proc, _, _ = tiny_hosts.build_cotam("onevision", tmp_path)
    clip = sorted((DATA / "video").iterdir())[0]
    inputs = proc(text=tiny_hosts.chat_prompt(proc, "video"), videos=[clip], num_frames=4, quality=3)
    n_video_tokens = int((inputs["input_ids"] == model.config.video_token_index).sum())
    assert n_video_tokens == 4 * 2 * 2 + 1  # frames × pooled 2×2 grid + newline
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    frames = [np.asarray(to_pil(KODAK / f"kodim0{i}.png").resize((96, 64))) for i in (1, 2)]
    from_frames = proc(text=tiny_hosts.chat_prompt(proc, "video"), videos=[frames], quality=3)
    with torch.no_grad():
        assert torch.isfinite(model(**from_frames).logits).all()


def test_video_is_refused_for_hosts_without_a_video_path(tmp_path):
    model, proc, _, _ = tiny_hosts.build_cotam("llava", tmp_path)
    frames = [np.zeros((64, 64, 3), np.uint8)] * 2
    with pytest.raises(ConfigError, match="no video"):
        proc(text="USER: <video> what ?", videos=[frames])


def test_bitstream_from_another_codec_gets_a_clear_error(tmp_path):
    model, proc, _, stock_proc = tiny_hosts.build_cotam("llava", tmp_path)
    other = CoTAMProcessor(stock_proc, model.vision_tower.cotam_config, tiny_hosts.tiny_codec(seed=1))
    inputs = other(text=tiny_hosts.chat_prompt(proc), images=[KODAK / "kodim23.png"])
    with pytest.raises(CodecMismatchError, match="made by codec"):
        model(**inputs)


def test_processor_checks_counts(tmp_path):
    model, proc, _, _ = tiny_hosts.build_cotam("llava", tmp_path)
    data = proc.encode_images([KODAK / "kodim23.png"])[0]
    with pytest.raises(ImageInputError, match="one container per image"):
        from cotam_llava.codec.pipeline import encode

        proc(text="USER: <image> <image> ?", bitstreams=[encode(model.codec, [KODAK / "kodim23.png"] * 2, canvas=64)])
    with pytest.raises(ValueError):  # the host processor's own check: 2 image tokens, 1 image
        proc(text="USER: <image> <image> ?", bitstreams=[data])


def test_stock_pixel_inputs_are_compressed_on_the_fly(tmp_path):
    model, proc, _, stock_proc = tiny_hosts.build_cotam("llava", tmp_path)
    prompt = tiny_hosts.chat_prompt(proc)
    pixels = stock_proc(text=prompt, images=[to_pil(KODAK / "kodim23.png")], return_tensors="pt")
    with torch.no_grad():
        low = model(**pixels).logits
        model.vision_tower.cotam_config.quality = 9
        high = model(**pixels).logits
    assert low.shape == high.shape and not torch.allclose(low, high)


def test_half_precision_language_model_keeps_an_fp32_tower(tmp_path):
    model, proc, _, _ = tiny_hosts.build_cotam("llava", tmp_path)
    model.save_pretrained(tmp_path / "cotam")
    half = type(model).from_pretrained(tmp_path / "cotam", dtype=torch.bfloat16, device_map="cpu").eval()
    assert half.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    assert half.vision_tower.adapter.proj_in.weight.dtype == torch.float32
    assert next(half.vision_tower.encoder.parameters()).dtype == torch.float32
    inputs = proc(text=tiny_hosts.chat_prompt(proc), images=[KODAK / "kodim23.png"])
    out = half.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_language_model_loads_and_generates(bits, tmp_path):
    from transformers import BitsAndBytesConfig

    model, proc, _, stock_proc = tiny_hosts.build_cotam("llava", tmp_path, width=64)  # bnb's CPU 4-bit needs K ≥ 64
    model.save_pretrained(tmp_path / "cotam")
    quant = BitsAndBytesConfig(load_in_4bit=True) if bits == 4 else BitsAndBytesConfig(load_in_8bit=True)
    q = type(model).from_pretrained(tmp_path / "cotam", quantization_config=quant).eval()
    layer = q.model.language_model.layers[0].self_attn.q_proj
    assert "bitsandbytes" in type(layer).__module__
    assert type(q.vision_tower.adapter.proj_in) is torch.nn.Linear  # the tower is not quantized
    # the projector stays full precision, from a saved folder as from a host + codec
    host = type(model).from_host_pretrained(tmp_path / "host", model.codec, quantization_config=quant,
                                            image_processor=stock_proc.image_processor)
    for loaded in (q, host):
        assert type(loaded.model.multi_modal_projector.linear_1) is torch.nn.Linear
        assert "bitsandbytes" in type(loaded.model.language_model.layers[0].mlp.up_proj).__module__
    inputs = proc(text=tiny_hosts.chat_prompt(proc), images=[KODAK / "kodim23.png"])
    out = q.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2


def test_anyres_edge_uses_hierarchical_guidance_and_the_model_reads_it(tmp_path):
    from cotam_llava.codec.guidance import GuidanceConfig, ShallowAttentionGuidance
    from cotam_llava.codec.container import parse
    from cotam_llava.vision.edge import EdgeEncoder
    from conftest import make_tiny_vit

    model, proc, _, _ = tiny_hosts.build_cotam("onevision", tmp_path)
    guidance = ShallowAttentionGuidance(make_tiny_vit("siglip", layers=2, size=56), GuidanceConfig(num_layers=2, grid=4))
    edge = EdgeEncoder(model.codec, model.vision_tower.cotam_config, guidance=guidance)
    picture = to_pil(KODAK / "kodim01.png")  # 768×512 → best resolution 112×112 → shrunk to 112×75, 2×2 tiles
    assert edge.picture(picture).size == (112, 75)
    item = parse(edge.encode_image(picture, quality=5)).items[0]
    assert item.quality_map is not None and item.quality_map.shape == (8, 8)  # 2×2 tiles of 4×4 cells
    inputs = proc(text=tiny_hosts.chat_prompt(proc), bitstreams=[edge.encode_image(picture, quality=5)])
    assert inputs["image_sizes"].tolist() == [[75, 112]]
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_tower_config_with_host_guidance_loads_the_whole_vit_and_codes_one_map(tmp_path):
    import dataclasses

    from cotam_llava.codec.container import parse
    from cotam_llava.codec.guidance import HostGuidance
    from cotam_llava.vision.edge import EdgeEncoder
    from conftest import KODAK_DIR, make_tiny_vit

    model, _, _, _ = tiny_hosts.build_cotam("onevision", tmp_path)
    make_tiny_vit("siglip", layers=3, size=56).save_pretrained(tmp_path / "vit")
    config = dataclasses.replace(model.vision_tower.cotam_config, guidance_model=str(tmp_path / "vit"),
                                 guidance={"allocation": "host", "grid": 4})
    edge = EdgeEncoder(model.codec, config)
    layers = [m for m in edge.guidance.encoder.modules() if type(m).__name__.endswith("EncoderLayer")]
    assert isinstance(edge.guidance, HostGuidance) and len(layers) == 3  # the whole ViT, not its first K layers
    picture = to_pil(KODAK_DIR / "kodim01.png")  # AnyRes 2×2 tiles for the paper's rule; the host rule judges it whole
    uniform = EdgeEncoder(model.codec, config, use_guidance=False).encode_image(picture, quality=5)
    data = edge.encode_image(picture, quality=5)
    item = parse(data).items[0]
    assert item.quality_map is None or item.quality_map.shape == (4, 4)
    assert len(data) <= len(uniform) * 1.005 + 1
