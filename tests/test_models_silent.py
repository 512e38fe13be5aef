"""Results that used to be silently wrong (issue 16): saved layout and weights, dtype, the chat-template path, lmms-eval.

Each test failed on the code before its fix: a saved folder stored the tower as ``vision_tower.encoder.*`` (stock
loaders and ``from_host_pretrained`` re-initialised it at random), a bf16 model saved ``"dtype": "float32"``,
``apply_chat_template(tokenize=True)`` fed host float pixels past the codec, and ``codec=cotam`` without a guidance
model quietly ran without guidance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import tiny_hosts
from cotam_llava.errors import CheckpointError
from cotam_llava.models import cotam_class_for

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
ADAPTER = "vision_tower.adapter."


def _keys(folder: Path) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max |Δ| over all tensors of two state dicts with the same keys (inf where shapes differ)."""
    assert a.keys() == b.keys()
    diffs = [(x.float() - y.float()).abs().max().item() if x.shape == y.shape else float("inf")
             for x, y in ((a[k], b[k]) for k in a) if x.numel() or y.numel()]
    return max(diffs)


def _trained_cotam(name: str, folder: Path):
    """A CoTAM model whose adapter is not zero (so a lost adapter shows), saved under folder/cotam."""
    model, proc, stock, stock_proc = tiny_hosts.build_cotam(name, folder)
    torch.manual_seed(1)
    for p in model.vision_tower.adapter.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model.save_pretrained(folder / "cotam")
    return model, proc, stock, stock_proc


def _rewrite_keys(folder: Path, rename) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    save_file({rename(k): v for k, v in state.items()}, str(path), metadata={"format": "pt"})


# --------------------------------------------------------------------------- the saved layout
@pytest.mark.parametrize("name", tiny_hosts.HOSTS)
def test_saved_folder_keeps_the_host_layout_and_round_trips_every_weight(name, tmp_path):
    model, _, stock, _ = _trained_cotam(name, tmp_path)
    saved = _keys(tmp_path / "cotam")
    assert {k for k in saved if not k.startswith(ADAPTER)} == _keys(tmp_path / "host")  # the host's own keys
    assert {k.removeprefix(ADAPTER) for k in saved if k.startswith(ADAPTER)} == set(model.vision_tower.adapter.state_dict())

    loaded = type(model).from_pretrained(tmp_path / "cotam")
    assert _max_abs_diff(model.state_dict(), loaded.state_dict()) == 0
    card = (tmp_path / "cotam" / "README.md").read_text()  # how to load it: our import first
    assert "import cotam_llava" in card and model.config.model_type in card and model.codec.codec_id.hex() in card
    (tmp_path / "cotam" / "README.md").write_text("my own card")
    loaded.save_pretrained(tmp_path / "cotam")
    assert (tmp_path / "cotam" / "README.md").read_text() == "my own card"  # a user's card is kept

    # the stock class reads the same vision weights (the adapter is reported as unexpected and ignored)
    plain = type(stock).from_pretrained(tmp_path / "cotam")
    assert _max_abs_diff(model.vision_tower.encoder.state_dict(), plain.model.vision_tower.state_dict()) == 0
    assert _max_abs_diff(model.model.language_model.state_dict(), plain.model.language_model.state_dict()) == 0


def test_from_host_pretrained_refuses_a_cotam_folder(tmp_path):
    model, proc, _, _ = _trained_cotam("llava", tmp_path)
    with pytest.raises(CheckpointError, match=r"saved CoTAM model.*CoTAMLlavaForConditionalGeneration\.from_pretrained"):
        type(model).from_host_pretrained(tmp_path / "cotam", model.codec, image_processor=proc.image_processor)


def test_a_host_checkpoint_with_the_vision_model_prefix_is_saved_in_its_own_layout(tmp_path):
    """Hub LLaVA checkpoints store CLIP as ``vision_tower.vision_model.*``; the CoTAM folder keeps that layout."""
    stock, stock_proc = tiny_hosts.tiny_host("llava")
    stock.save_pretrained(tmp_path / "host")
    _rewrite_keys(tmp_path / "host", lambda k: k.replace("vision_tower.", "vision_tower.vision_model.", 1))
    cls = cotam_class_for("llava")
    model = cls.from_host_pretrained(tmp_path / "host", tiny_hosts.tiny_codec(), image_processor=stock_proc.image_processor)
    assert _max_abs_diff(stock.model.vision_tower.state_dict(), model.vision_tower.encoder.state_dict()) == 0
    model.save_pretrained(tmp_path / "cotam")
    assert {k for k in _keys(tmp_path / "cotam") if not k.startswith(ADAPTER)} == _keys(tmp_path / "host")
    assert _max_abs_diff(model.state_dict(), cls.from_pretrained(tmp_path / "cotam").state_dict()) == 0
    plain = type(stock).from_pretrained(tmp_path / "cotam")
    assert _max_abs_diff(stock.model.vision_tower.state_dict(), plain.model.vision_tower.state_dict()) == 0


@pytest.mark.parametrize("layout", ["encoder", "vision_model"])
@pytest.mark.parametrize("name", ["llava", "onevision"])
def test_folders_saved_by_earlier_versions_load_exactly_and_resave_in_the_host_layout(name, layout, tmp_path):
    """Earlier versions wrote ``vision_tower.encoder.*`` (from a host saved by transformers 5) or
    ``vision_tower.vision_model.{encoder,adapter}.*`` (from a hub host with the ``vision_model`` prefix)."""
    model, _, _, _ = _trained_cotam(name, tmp_path)
    new_layout = _keys(tmp_path / "cotam")

    def old(key: str) -> str:
        if not key.startswith("vision_tower."):
            return key
        rest = key.removeprefix("vision_tower.")
        rest = rest if rest.startswith("adapter.") else "encoder." + rest
        return "vision_tower." + ("vision_model." if layout == "vision_model" else "") + rest

    _rewrite_keys(tmp_path / "cotam", old)
    loaded = type(model).from_pretrained(tmp_path / "cotam")
    assert _max_abs_diff(model.state_dict(), loaded.state_dict()) == 0
    loaded.save_pretrained(tmp_path / "resaved")
    assert _keys(tmp_path / "resaved") == new_layout


def test_a_folder_without_the_tower_weights_is_an_error(tmp_path):
    model, _, _, _ = _trained_cotam("llava", tmp_path)
    _rewrite_keys(tmp_path / "cotam", lambda k: k.replace("vision_tower.", "vision_tower.unknown.", 1))
    with pytest.raises(CheckpointError, match="vision tower"):
        type(model).from_pretrained(tmp_path / "cotam")


# --------------------------------------------------------------------------- dtype
def test_a_bf16_model_saves_and_reloads_as_bf16(tmp_path):
    stock, stock_proc = tiny_hosts.tiny_host("llava")
    stock.save_pretrained(tmp_path / "host")
    cls = cotam_class_for("llava")
    model = cls.from_host_pretrained(tmp_path / "host", tiny_hosts.tiny_codec(), image_processor=stock_proc.image_processor,
                                     dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and next(model.vision_tower.encoder.parameters()).dtype == torch.float32
    model.save_pretrained(tmp_path / "cotam")
    assert json.loads((tmp_path / "cotam" / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = cls.from_pretrained(tmp_path / "cotam")  # no dtype given: the saved one
    assert loaded.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    assert next(loaded.vision_tower.parameters()).dtype == torch.float32  # the tower stays fp32
    assert _max_abs_diff(model.state_dict(), loaded.state_dict()) == 0


# --------------------------------------------------------------------------- the chat-template path
@pytest.mark.parametrize("name", ["llava", "onevision"])
def test_chat_template_with_tokenize_codes_through_real_bitstreams(name, tmp_path):
    """``apply_chat_template(tokenize=True, return_dict=True)`` gives exactly ``processor(text=..., images=...)``."""
    from cotam_llava.imageio import to_pil
    from cotam_llava.codec.transport import is_packed_bitstreams, unpack_bitstreams

    _, proc, _, _ = tiny_hosts.build_cotam(name, tmp_path)
    proc.tokenizer.padding_side = "left"
    pictures = [to_pil(KODAK / "kodim23.png"), to_pil(KODAK / "kodim01.png").resize((200, 80))]
    conversations = [[{"role": "user", "content": [{"type": "image", "image": p},
                                                   {"type": "text", "text": "what is this ?"}]}] for p in pictures]
    for batch, images in ((conversations[0], pictures[:1]), (conversations, pictures)):
        coded = proc.apply_chat_template(batch, add_generation_prompt=True, tokenize=True, return_dict=True, quality=5,
                                         processor_kwargs={"padding": True})
        prompt = proc.apply_chat_template(batch, add_generation_prompt=True)
        direct = proc(text=prompt, images=images, quality=5, padding=True)
        assert is_packed_bitstreams(coded["pixel_values"])  # real bitstreams, not the host's float pixels
        assert coded.keys() == direct.keys() and all(torch.equal(coded[k], direct[k]) for k in direct)
        bits = [8 * len(s) for s in unpack_bitstreams(coded["pixel_values"])]
        assert len(bits) == len(images) and bits == [8 * len(s) for s in unpack_bitstreams(direct["pixel_values"])]
        ids = proc.apply_chat_template(batch, add_generation_prompt=True, tokenize=True, quality=5,
                                       processor_kwargs={"padding": True})
        assert torch.equal(ids, direct["input_ids"])


# --------------------------------------------------------------------------- lmms-eval
def test_lmms_guided_codec_without_a_guidance_model_is_an_error(tmp_path):
    pytest.importorskip("lmms_eval", reason="lmms-eval is not installed")
    from conftest import make_tiny_vit
    from cotam_llava.codec.container import parse
    from cotam_llava.errors import ConfigError
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM
    from cotam_llava.imageio import to_pil
    from cotam_llava.models import CoTAMProcessor

    model, proc, _, stock_proc = tiny_hosts.build_cotam("llava", tmp_path)
    assert model.vision_tower.cotam_config.guidance_model is None
    for codec, instead in (("cotam", "cotam-noguide"), ("cotam-noadapter", "base")):
        with pytest.raises(ConfigError, match=f"names no guidance model.*guidance=NAME_OR_FOLDER.*codec={instead}"):
            CoTAMLlavaLMM.from_model(model, proc, codec=codec)
    assert not CoTAMLlavaLMM.from_model(model, proc, codec="cotam-noguide").edge.use_guidance
    with pytest.raises(ConfigError, match="guidance=.* applies to codec=cotam"):
        CoTAMLlavaLMM.from_model(model, proc, codec="base", guidance="dinov2-imgfocus")

    make_tiny_vit("clip", layers=2, size=56).save_pretrained(tmp_path / "vit")
    # guidance=FOLDER gives a model without one its guidance, for the edge only
    lm = CoTAMLlavaLMM.from_model(model, proc, codec="cotam", quality=4, guidance=str(tmp_path / "vit"))
    assert lm.edge.use_guidance and model.vision_tower.cotam_config.guidance_model is None
    guided = type(model).from_host_pretrained(tmp_path / "host", model.codec, image_processor=stock_proc.image_processor,
                                              guidance={"num_layers": 2, "grid": 4}, guidance_model=str(tmp_path / "vit"))
    lm = CoTAMLlavaLMM.from_model(guided, CoTAMProcessor(stock_proc, guided.vision_tower.cotam_config, guided.codec),
                                  codec="cotam", quality=4)
    assert lm.edge.use_guidance
    [stream] = lm._code([to_pil(KODAK / "kodim23.png")]).streams
    assert parse(stream).items[0].quality_map is not None
