"""The original LLaVA code base (llava-torch 1.2.2.post1, in the lock) with ``patches/llava`` and the CoTAM tower.

Everything runs on a patched *copy* of the installed llava package (tests/tiny_llava.py), with tiny random
weights built from configs: the patch set on the released source, the stock CLIP path, generation with LLaVA's
own classes from real bitstreams (equal to the transformers-layout CoTAM model), fp16 casts of packed bitstreams,
one step of LLaVA's train.py (projector pre-training, then fine-tuning), the layout conversion, and (slow)
lmms-eval's ``--model llava`` on the tiny task.
"""

from __future__ import annotations

import hashlib
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from tiny_hosts import tiny_host
from tiny_llava import copy_llava, patched_llava_copy, tiny_cotam_folders, tiny_llama_folder

REPO = Path(__file__).resolve().parents[1]
PATCHES = REPO / "patches" / "llava"


@pytest.fixture(scope="module")
def llava_root(tmp_path_factory):
    with patched_llava_copy(tmp_path_factory.mktemp("llava_patched")) as root:
        yield root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, llava_root):
    """(transformers-layout folder, original-layout folder) of one tiny CoTAM LLaVA."""
    return tiny_cotam_folders(tmp_path_factory.mktemp("tiny"))


def picture(w: int = 96, h: int = 64) -> Image.Image:
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255) // w, (yy * 255) // h, ((xx // 8 + yy // 8) % 2) * 200], -1).astype(np.uint8)
    return Image.fromarray(arr)


def _record_hashes() -> dict[str, str]:
    from importlib.metadata import distribution

    out = {}
    for f in distribution("llava-torch").files or []:
        if f.hash is not None and str(f).startswith("llava/"):
            out[str(f)] = f.hash.value
    return out


def _sha(path: Path) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------- the patch set
def test_patch_set_applies_to_the_release_with_patch_and_git_apply_and_reverts(tmp_path):
    from cotam_llava.cli import main
    from cotam_llava.integrations.llava.patching import patch_files, patch_state, revert_patches

    root = copy_llava(tmp_path / "site")
    if patch_state(root).state == "applied":
        revert_patches(root)
    hashes = _record_hashes()
    touched = sorted({line[6:] for p in patch_files() for line in p.read_text().splitlines() if line.startswith("+++ b/")})
    assert touched == ["llava/__init__.py", "llava/model/multimodal_encoder/builder.py", "llava/train/llava_trainer.py",
                       "llava/train/train.py"]
    for rel in touched:  # the copy is the released source, byte for byte (the wheel's RECORD)
        assert _sha(root / rel) == hashes[rel], rel
    before = {rel: (root / rel).read_bytes() for rel in touched}
    series = [str(p) for p in patch_files()]

    for apply, undo in ((["patch", "-p1", "-i"], ["patch", "-p1", "-R", "-i"]), (["git", "apply"], ["git", "apply", "-R"])):
        for p in series if apply[0] == "patch" else [None]:
            args = apply + ([p] if p else series)
            assert subprocess.run(args, cwd=root, capture_output=True).returncode == 0, args
        text = (root / "llava/model/multimodal_encoder/builder.py").read_text()
        assert "cotam_llava.integrations.llava import build_vision_tower" in text
        for rel in touched:
            compile((root / rel).read_text(), rel, "exec")
        for p in reversed(series) if undo[0] == "patch" else [None]:
            args = undo + ([p] if p else list(reversed(series)))
            assert subprocess.run(args, cwd=root, capture_output=True).returncode == 0, args
        assert {rel: (root / rel).read_bytes() for rel in touched} == before

    # the command: check, apply (twice: the second does nothing), revert → the release again
    assert main(["patch-llava", "--check", str(root)]) == 1
    assert main(["patch-llava", str(root)]) == 0
    assert patch_state(root).state == "applied"
    assert main(["patch-llava", str(root)]) == 0
    assert main(["patch-llava", "--check", str(root)]) == 0
    assert main(["patch-llava", "--revert", str(root)]) == 0
    assert {rel: (root / rel).read_bytes() for rel in touched} == before
    # a tree that is neither the release nor patched is left alone; a folder without llava is an error
    (root / "llava/model/multimodal_encoder/builder.py").write_text("# someone else's builder\n")
    assert main(["patch-llava", str(root)]) == 1
    assert (root / "llava/model/multimodal_encoder/builder.py").read_text() == "# someone else's builder\n"
    assert main(["patch-llava", str(tmp_path / "nowhere")]) == 1


def test_stock_clip_path_of_the_patched_builder_is_unchanged(llava_root, tmp_path):
    from llava.model.multimodal_encoder.builder import build_vision_tower
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

    from cotam_llava.integrations.llava.tower import CoTAMLlavaVisionTower

    assert Path(sys.modules["llava"].__file__).is_relative_to(llava_root)
    stock, proc = tiny_host("llava")
    stock.model.vision_tower.save_pretrained(tmp_path / "clip")
    proc.image_processor.save_pretrained(tmp_path / "clip")
    args = SimpleNamespace(mm_vision_tower=str(tmp_path / "clip"), mm_vision_select_layer=-2,
                           mm_vision_select_feature="patch")
    tower = build_vision_tower(args)
    assert type(tower) is CLIPVisionTower
    pixels = proc.image_processor(images=[picture()], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = stock.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert torch.equal(tower(pixels), expected)
    with pytest.raises(ValueError, match="Unknown vision tower: somebody/clip"):
        build_vision_tower(SimpleNamespace(mm_vision_tower="somebody/clip", mm_vision_select_layer=-2))
    # only a folder with cotam_tower.json goes to CoTAM
    with pytest.raises(ValueError, match="Unknown vision tower"):
        build_vision_tower(SimpleNamespace(mm_vision_tower="cotam_tower", mm_vision_select_layer=-2))

    # a tower folder made from the same CLIP folder (cotam llava-tower) is built as the CoTAM tower; with its zero
    # adapter it gives exactly the stock tower's features of the decoded picture
    from cotam_llava.cli import main
    from cotam_llava.codec.pipeline import decode_container
    from cotam_llava.codec.container import parse
    from cotam_llava.imageio import to_pil
    from tiny_hosts import tiny_codec

    tiny_codec().save_pretrained(tmp_path / "codec")
    assert main(["llava-tower", str(tmp_path / "tower"), "--encoder", str(tmp_path / "clip"),
                 "--checkpoint", str(tmp_path / "codec")]) == 0
    assert main(["llava-tower", str(tmp_path / "tower"), "--encoder", str(tmp_path / "clip"),
                 "--checkpoint", str(tmp_path / "codec")]) == 1  # not into a folder that is not empty
    cotam = build_vision_tower(SimpleNamespace(mm_vision_tower=str(tmp_path / "tower"), mm_vision_select_layer=-2,
                                               mm_vision_select_feature="patch"))
    assert isinstance(cotam, CoTAMLlavaVisionTower) and cotam.is_loaded
    packed = cotam.image_processor([picture()], return_tensors="pt")["pixel_values"]
    decoded = decode_container(cotam.vision_tower.codec, parse(cotam.image_processor.last_streams[0]))[0]
    stock_pixels = proc.image_processor(images=[to_pil(decoded.picture)], return_tensors="pt")["pixel_values"]
    assert torch.equal(cotam(packed), tower(stock_pixels))


# --------------------------------------------------------------------------- the tower and its processor
def test_tower_contract_select_layer_feature_and_precision(llava_root, tiny):
    from cotam_llava.errors import ConfigError
    from cotam_llava.integrations.llava.tower import CoTAMLlavaImageProcessor, CoTAMLlavaVisionTower

    folder = tiny[1] / "cotam_tower"
    args = SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="patch")
    lazy = CoTAMLlavaVisionTower(folder, args, delay_load=True)
    assert not lazy.is_loaded and lazy.config.hidden_size == 32 and lazy.num_patches == 16 and lazy.num_patches_per_side == 4
    lazy.load_model()
    assert lazy.is_loaded and isinstance(lazy.image_processor, CoTAMLlavaImageProcessor)
    ip = lazy.image_processor
    assert ip.crop_size == {"height": 56, "width": 56} and len(ip.image_mean) == 3
    packed = ip.preprocess([picture(), picture(64, 64)], return_tensors="pt")["pixel_values"]
    assert packed.shape == (2, 3, 56, 56) and packed.dtype == torch.float32
    patch = lazy(packed)
    cls = CoTAMLlavaVisionTower(folder, SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="cls_patch"))
    last = CoTAMLlavaVisionTower(folder, SimpleNamespace(mm_vision_select_layer=-1, mm_vision_select_feature="patch"))
    both = cls(packed)
    assert patch.shape == (2, 16, 32) and both.shape == (2, 17, 32)
    assert torch.equal(both[:, 1:], patch) and not torch.allclose(last(packed), patch)
    # a text-only training sample's zero image (not a bitstream) beside a real one: compressed on the fly
    mixed = lazy(torch.stack([torch.zeros(3, 56, 56), packed[1]]))
    assert mixed.shape == (2, 16, 32) and torch.equal(mixed[1], patch[1]) and torch.isfinite(mixed[0]).all()
    as_list = lazy([packed[0], packed[1]])  # LLaVA's list form: one (1, N, D) per image
    assert [t.shape for t in as_list] == [(1, 16, 32)] * 2 and torch.equal(torch.cat(as_list), patch)
    # LLaVA casts the tower to fp16: the CLIP encoder follows, the adapter and the codec stay fp32
    lazy.to(dtype=torch.float16)
    assert lazy.dtype == torch.float16 and lazy.dummy_feature.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in lazy.vision_tower.adapter.parameters())
    assert all(p.dtype == torch.float32 for p in lazy.vision_tower.codec.parameters())
    out16 = lazy(packed.half())
    assert out16.dtype == torch.float16 and out16.shape == patch.shape
    torch.testing.assert_close(out16.float(), patch, atol=2e-2, rtol=2e-2)
    with pytest.raises(ConfigError, match="mm_vision_select_feature"):
        CoTAMLlavaVisionTower(folder, SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="cls"))
    with pytest.raises(ConfigError, match="takes no do_resize"):
        ip.preprocess(picture(), return_tensors="pt", do_resize=False)


def test_fp16_and_bf16_casts_keep_packed_bitstreams_exact(llava_root, tiny):
    from cotam_llava.errors import BitstreamFormatError, ChecksumError, ConfigError, CoTAMError
    from cotam_llava.integrations.llava.tower import (
        CoTAMLlavaVisionTower,
        is_packed_pixels,
        pack_into_pixels,
        unpack_pixels,
    )

    data = bytes(range(256)) * 30 + os.urandom(1000)
    packed = pack_into_pixels(data, 56)
    assert packed.shape == (3, 56, 56)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert unpack_pixels(packed.to(dtype)) == data
    with pytest.raises(ConfigError, match="does not fit"):
        pack_into_pixels(b"x" * (3 * 56 * 56), 56)
    normalised = (packed / 255 - 0.5) / 0.25  # what a stock image processor would have made of it
    assert not is_packed_pixels(normalised)
    with pytest.raises(BitstreamFormatError, match="not a packed"):
        unpack_pixels(normalised)
    bent = packed.clone()
    bent.view(-1)[20] = 0.5
    with pytest.raises(BitstreamFormatError, match="not bytes"):
        unpack_pixels(bent)
    long = packed.clone()
    long.view(-1)[8:16] = 255.0
    with pytest.raises(BitstreamFormatError, match="length"):
        unpack_pixels(long)

    # a real bitstream: the tower's features are the same whether LLaVA cast the images to fp16 or not
    tower = CoTAMLlavaVisionTower(tiny[1] / "cotam_tower", SimpleNamespace(mm_vision_select_layer=-2))
    images = tower.image_processor([picture()], return_tensors="pt")["pixel_values"]
    stream = tower.image_processor.last_streams[0]
    from cotam_llava.codec.container import MAGIC

    assert unpack_pixels(images[0].half()) == stream and stream.startswith(MAGIC)
    assert torch.equal(tower(images.half()).float(), tower(images).half().float())
    corrupt = bytearray(stream)
    corrupt[len(corrupt) // 2] ^= 0x40
    with pytest.raises(CoTAMError) as err:
        tower(pack_into_pixels(bytes(corrupt), 56)[None].half())
    assert isinstance(err.value, (ChecksumError, BitstreamFormatError)) or "CRC" in str(err.value)
    # bytes pass through the processor unchanged
    assert unpack_pixels(tower.image_processor(stream, return_tensors="pt")["pixel_values"][0]) == stream


# --------------------------------------------------------------------------- generation with LLaVA's own classes
def test_generation_from_a_real_bitstream_equals_the_transformers_model(llava_root, tiny):
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.model import LlavaLlamaForCausalLM
    from llava.model.builder import load_pretrained_model
    from transformers import AutoProcessor

    from cotam_llava.codec.container import parse
    from cotam_llava.integrations.llava.tower import CoTAMLlavaImageProcessor, CoTAMLlavaVisionTower
    from cotam_llava.models import CoTAMLlavaForConditionalGeneration

    hf_dir, orig_dir = tiny
    orig = LlavaLlamaForCausalLM.from_pretrained(orig_dir).eval()
    tower = orig.get_vision_tower()
    assert isinstance(tower, CoTAMLlavaVisionTower) and not tower.is_loaded
    tower.load_model()
    images = tower.image_processor([picture()], return_tensors="pt")["pixel_values"]
    stream = tower.image_processor.last_streams[0]
    assert len(parse(stream).items) == 1
    hf = CoTAMLlavaForConditionalGeneration.from_pretrained(hf_dir).eval()
    proc = AutoProcessor.from_pretrained(hf_dir)
    inputs = proc(text="USER: <image> what is this ? ASSISTANT:", bitstreams=[stream], return_tensors="pt")
    ids = torch.tensor([[9, -200, 11, 12, 13, 14, 10]])  # the same prompt, LLaVA's way (IMAGE_TOKEN_INDEX = -200)
    with torch.no_grad():
        expected = hf(**inputs).logits
        got = orig(input_ids=ids, images=images).logits
    assert got.shape == expected.shape == (1, 22, 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    new = orig.generate(ids, images=images, max_new_tokens=6, do_sample=False)
    ref = hf.generate(**inputs, max_new_tokens=6, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    assert torch.equal(new, ref)

    # LLaVA's loader (fp16, as lmms-eval uses it): tower encoder fp16, adapter and codec fp32, our processor
    tokenizer, model, processor, _ = load_pretrained_model(str(orig_dir), None, orig_dir.name, device_map="cpu", device="cpu")
    assert isinstance(processor, CoTAMLlavaImageProcessor) and model.dtype == torch.float16
    vt = model.get_vision_tower()
    assert vt.dtype == torch.float16 and next(vt.vision_tower.adapter.parameters()).dtype == torch.float32
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nwhat is this ?")
    conv.append_message(conv.roles[1], None)
    prompt_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, -200, return_tensors="pt")[None]
    for ratio in ("square", "pad"):
        model.config.image_aspect_ratio = ratio
        batch = process_images([picture(), picture(48, 80)], processor, model.config)
        assert batch.shape == (2, 3, 56, 56)
        out = model.generate(prompt_ids.repeat(2, 1), images=batch.half(), image_sizes=[(96, 64), (48, 80)],
                             max_new_tokens=3, do_sample=False)
        assert out.shape == (2, 3)

    # anyres: LLaVA cuts the global view and the tiles, the processor codes each view as its own bitstream
    orig.config.image_aspect_ratio = "anyres"
    orig.config.image_grid_pinpoints = [[56, 112], [112, 56], [112, 112]]
    orig.config.mm_patch_merge_type = "spatial_unpad"
    orig.model.image_newline = torch.nn.Parameter(torch.zeros(orig.config.hidden_size))
    views = process_images([picture(120, 60)], tower.image_processor, orig.config)
    assert views.shape == (1, 3, 3, 56, 56) and len(tower.image_processor.last_streams) == 1
    with torch.no_grad():
        logits = orig(input_ids=ids, images=views, image_sizes=[(120, 60)]).logits
    assert logits.shape[1] > 22 and torch.isfinite(logits).all()  # global view + unpadded tiles + newlines


def test_layout_conversion_round_trip_is_bit_exact(llava_root, tiny, tmp_path):
    from cotam_llava.errors import CheckpointError, ConfigError
    from cotam_llava.integrations.llava.convert import to_original, to_transformers
    from cotam_llava.models import CoTAMLlavaForConditionalGeneration

    hf_dir, orig_dir = tiny
    back = to_transformers(orig_dir, tmp_path / "back")
    a = CoTAMLlavaForConditionalGeneration.from_pretrained(hf_dir).state_dict()
    b = CoTAMLlavaForConditionalGeneration.from_pretrained(back).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="not empty"):
        to_original(hf_dir, orig_dir)
    with pytest.raises(CheckpointError, match="not a CoTAM LLaVA folder"):
        to_original(orig_dir, tmp_path / "x")
    with pytest.raises(CheckpointError, match="not an original LLaVA"):
        to_transformers(hf_dir, tmp_path / "y")


# --------------------------------------------------------------------------- LLaVA's train.py
def _train(monkeypatch, argv: list[str]) -> None:
    import llava.train.train as train_module

    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    train_module.train()


def test_llava_train_py_projector_pretraining_then_fine_tuning(llava_root, tiny, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from cotam_llava.integrations.llava.compat import FIXES

    tower = tiny[1] / "cotam_tower"
    llama = tiny_llama_folder(tmp_path / "llama")
    (tmp_path / "img").mkdir()
    picture().save(tmp_path / "img" / "a.png")
    picture(64, 80).save(tmp_path / "img" / "b.png")
    data = [{"id": "a", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nwhat is this ?"},
                                                          {"from": "gpt", "value": "w1 w2"}]},
            {"id": "b", "image": "b.png", "conversations": [{"from": "human", "value": "what is this ?\n<image>"},
                                                          {"from": "gpt", "value": "w3"}]}]
    (tmp_path / "data.json").write_text(json.dumps(data))
    common = ["--data_path", str(tmp_path / "data.json"), "--image_folder", str(tmp_path / "img"), "--vision_tower",
              str(tower), "--mm_projector_type", "mlp2x_gelu", "--mm_vision_select_layer", "-2",
              "--mm_use_im_start_end", "False", "--mm_use_im_patch_token", "False", "--max_steps", "1",
              "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
              "--report_to", "none", "--model_max_length", "64", "--dataloader_num_workers", "0",
              "--logging_steps", "1", "--lazy_preprocess", "True", "--dataloader_pin_memory", "False"]
    # stage 1: projector pre-training (plain template; only the projector trains; saved as mm_projector.bin)
    _train(monkeypatch, ["--model_name_or_path", str(llama), "--version", "plain", "--tune_mm_mlp_adapter", "True",
                         "--output_dir", str(tmp_path / "pretrain"), "--save_strategy", "steps", "--save_steps", "1",
                         *common])
    projector = torch.load(tmp_path / "pretrain" / "mm_projector.bin")
    step = torch.load(tmp_path / "pretrain" / "checkpoint-1" / "mm_projector.bin")  # LLaVA's _save_checkpoint
    assert step.keys() == projector.keys() and all(torch.equal(step[k], projector[k]) for k in step)
    assert sorted(projector) == [f"model.mm_projector.{i}.{w}" for i in (0, 2) for w in ("bias", "weight")]
    log = json.loads((tmp_path / "pretrain" / "trainer_state.json").read_text())["log_history"]
    assert log[0]["loss"] > 0 and torch.isfinite(torch.tensor(log[0]["grad_norm"]))
    # stage 2: fine-tuning from the pre-trained projector (vicuna_v1 template, pad-to-square, all of the LLM trains)
    out = tmp_path / "llava-finetune"
    _train(monkeypatch, ["--model_name_or_path", str(llama), "--version", "v1", "--pretrain_mm_mlp_adapter",
                         str(tmp_path / "pretrain" / "mm_projector.bin"), "--image_aspect_ratio", "pad",
                         "--group_by_modality_length", "True", "--output_dir", str(out), "--save_strategy", "no",
                         *common])
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert log[0]["loss"] > 0  # the answers are supervised (no tokenization mismatch masking everything)
    saved = load_file(str(out / "model.safetensors"))
    moved = saved["model.mm_projector.0.weight"].float() - projector["model.mm_projector.0.weight"].float()
    assert moved.abs().max() > 0  # one optimiser step moved the projector away from the pre-trained one
    assert not any(k.startswith("model.vision_tower.vision_tower.adapter") and not torch.isfinite(v).all()
                   for k, v in saved.items())
    config = json.loads((out / "config.json").read_text())
    assert config["mm_vision_tower"] == str(tower) and config["image_aspect_ratio"] == "pad"
    assert "llava.train.llava_trainer" in FIXES
    # the fine-tuned folder is a LLaVA checkpoint: LLaVA's loader builds the CoTAM tower and generates
    from llava.model.builder import load_pretrained_model

    from cotam_llava.integrations.llava.tower import CoTAMLlavaImageProcessor

    tokenizer, model, processor, _ = load_pretrained_model(str(out), None, out.name, device_map="cpu", device="cpu")
    assert isinstance(processor, CoTAMLlavaImageProcessor)
    images = processor([picture()], return_tensors="pt")["pixel_values"].half()
    ids = torch.tensor([[1, 9, -200, 11, 12, 13, 14, 10]])
    assert model.generate(ids, images=images, min_new_tokens=2, max_new_tokens=2, do_sample=False).shape == (1, 2)


# --------------------------------------------------------------------------- lmms-eval --model llava
@pytest.mark.slow
def test_lmms_eval_model_llava_on_the_tiny_task(llava_root, tiny, tmp_path):
    """lmms-eval 0.7.3 exits 0 even when a run fails: the results file is what is checked."""
    sys.path.insert(0, str(REPO / "eval" / "tasks" / "cotam_tiny"))
    try:
        import utils as tiny_utils  # eval/tasks/cotam_tiny/utils.py
    finally:
        sys.path.pop(0)
    from cotam_llava.integrations.llava.tower import CoTAMLlavaVisionTower

    out = tmp_path / "lmms"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(llava_root), str(REPO)]),
           "COTAM_DATA_TINY": str(tmp_path / "tiny_data"), "COTAM_BITS_LOG": str(tmp_path / "bits.jsonl")}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("lmms-eval")), "--model", "llava", "--model_args",
         f"pretrained={tiny[1]},device=cpu,device_map=auto", "--tasks", "cotam_tiny", "--include_path",
         str(REPO / "eval" / "tasks"), "--output_path", str(out), "--log_samples"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    results = list(out.glob("*/*_results.json"))
    assert results, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(results[0].read_text())["results"]["cotam_tiny"]
    assert 0.0 <= res["exact_match,none"] <= 1.0
    # the bits are the real bitstreams' (the processor codes the task's pictures the same way here)
    tower = CoTAMLlavaVisionTower(tiny[1] / "cotam_tower", SimpleNamespace(mm_vision_select_layer=-2))
    rates = []
    for _, size, background, shape, _, _ in tiny_utils.ITEMS:
        image = tiny_utils.draw(size, background, shape)
        tower.image_processor([image])
        rates.append(8 * len(tower.image_processor.last_streams[0]) / (size[0] * size[1]))
    assert res["bpp,none"] == pytest.approx(sum(rates) / len(rates), rel=1e-9)
    lines = [json.loads(line) for line in (tmp_path / "bits.jsonl").read_text().splitlines()]
    assert sorted(line["bpp"] for line in lines) == pytest.approx(sorted(rates), rel=1e-9)
    assert all(line["model"] == "llava" and line["doc_key"] for line in lines)
