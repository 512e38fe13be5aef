"""train-mllm on a tiny random LLaVA: the loss falls; only the chosen parameters change; save → load gives the same
logits with and without merging; a 4-bit QLoRA step on CPU; the prompt carries no loss; a killed run resumes to the
same weights; the fine-tuned folder runs in `cotam chat` unchanged."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tiny_hosts
from cotam_llava.cli import main
from cotam_llava.errors import CheckpointError, ConfigError, ImageInputError
from cotam_llava.training.arguments import MLLMTrainingArguments
from cotam_llava.training.instruct import IGNORE_INDEX, load_conversations, to_messages, write_tiny_instruct
from cotam_llava.training.mllm_trainer import MLLMTrainer, train_mllm

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mllm")
    model, proc, _, _ = tiny_hosts.build_cotam("llava", root, width=64)  # bnb's CPU 4-bit kernels need K ≥ 64
    model.save_pretrained(root / "cotam")
    proc.save_pretrained(root / "cotam")
    data = write_tiny_instruct(root / "data", samples=6, seed=1)
    return {"root": root, "model": root / "cotam", "data": data}


def _args(setup, out: Path, **kw) -> MLLMTrainingArguments:
    base = dict(output_dir=str(out), model=str(setup["model"]), data_path=str(setup["data"]), batch_size=2,
                max_steps=3, save_every=1, log_every=1, learning_rate=5e-3, module_learning_rate=1e-2, lr_ramp_steps=1,
                lr_decay_at=[1.0], lora_dropout=0.0, threads=1, qualities=[2, 7])
    base.update(kw)
    return MLLMTrainingArguments(**base)


def _fixed_batch(trainer: MLLMTrainer, quality: int = 5):
    return trainer.make_batch([0, 1], None, quality=quality, differentiable=False)


def _logits(model, batch) -> torch.Tensor:
    inputs = {k: v for k, v in batch.inputs.items() if k != "labels"}
    with torch.no_grad():
        return model.eval()(**inputs).logits


def test_lora_training_lowers_the_loss_changes_only_lora_and_round_trips(setup, tmp_path):
    from cotam_llava.models import CoTAMLlavaForConditionalGeneration
    from cotam_llava.models.lora import has_unmerged_lora

    trainer = MLLMTrainer(_args(setup, tmp_path / "run", max_steps=3), progress=False)
    before = {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters()}
    codec_before = {n: p.detach().clone() for n, p in trainer.codec.named_parameters()}
    batch = _fixed_batch(trainer)
    with torch.no_grad():
        loss_before = float(trainer.loss(batch)[1])
    final = trainer.train()
    with torch.no_grad():
        trainer.model.eval()
        loss_after = float(trainer.loss(batch)[1])
    assert loss_after < loss_before - 0.05, (loss_before, loss_after)
    print(f"answer CE on a fixed batch: {loss_before:.4f} -> {loss_after:.4f}")

    changed = {n for n, p in trainer.unwrapped.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all("lora_B" in n or "lora_A" in n for n in changed), sorted(changed)[:5]
    assert all(".language_model." in n for n in changed)  # never the vision tower's q/k/v projections
    assert {n for n in changed if "lora_B" in n}  # B starts at zero: it moved
    assert all(torch.equal(p, codec_before[n]) for n, p in trainer.codec.named_parameters())

    # the export: base files + lora/ in the PEFT layout (safetensors only), the resolved arguments
    assert (final / "lora" / "adapter_config.json").is_file() and (final / "lora" / "adapter_model.safetensors").is_file()
    assert not list(final.rglob("*.bin")) and (final / "codec" / "config.json").is_file()
    assert json.loads((tmp_path / "run" / "training_args.json").read_text())["lora_r"] == 8
    assert json.loads((final / "training_info.json").read_text())["trained"] == ["lora"]

    reference = _logits(trainer.cotam_model, batch)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = CoTAMLlavaForConditionalGeneration.from_pretrained(final)
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))], caught[0].message
    assert has_unmerged_lora(loaded) and type(loaded) is CoTAMLlavaForConditionalGeneration
    merged = CoTAMLlavaForConditionalGeneration.from_pretrained(final, merge_lora=True)
    assert not has_unmerged_lora(merged)
    base = CoTAMLlavaForConditionalGeneration.from_pretrained(final, apply_lora=False)
    for model in (loaded, merged):
        assert torch.allclose(_logits(model, batch), reference, atol=1e-4)
    assert not torch.allclose(_logits(base, batch), reference, atol=1e-3)  # the LoRA weights matter
    with pytest.raises(ConfigError, match="merge_lora=True"):
        loaded.save_pretrained(tmp_path / "unmerged")
    merged.save_pretrained(tmp_path / "merged")  # a merged model saves as a plain CoTAM folder
    again = CoTAMLlavaForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert torch.allclose(_logits(again, batch), reference, atol=1e-4)


def test_projector_and_adapter_train_with_lora_and_load_back(setup, tmp_path):
    from cotam_llava.models import CoTAMLlavaForConditionalGeneration

    trainer = MLLMTrainer(_args(setup, tmp_path / "run", max_steps=2, train_projector=True, train_adapter=True),
                          progress=False)
    before = {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters()}
    final = trainer.train()
    changed = {n for n, p in trainer.unwrapped.named_parameters() if not torch.equal(p.detach(), before[n])}
    kinds = {("lora" if "lora_" in n else "projector" if "multi_modal_projector" in n else
              "adapter" if "vision_tower.adapter" in n else n) for n in changed}
    assert kinds == {"lora", "projector", "adapter"}
    assert all("modules_to_save" in n for n in changed if "lora_" not in n)  # the originals stay as loaded
    config = json.loads((final / "lora" / "adapter_config.json").read_text())
    assert set(config["modules_to_save"]) == {"multi_modal_projector", "vision_tower.adapter"}
    batch = _fixed_batch(trainer, quality=3)
    reference = _logits(trainer.cotam_model, batch)
    for merge in (False, True):
        loaded = CoTAMLlavaForConditionalGeneration.from_pretrained(final, merge_lora=merge)
        assert torch.allclose(_logits(loaded, batch), reference, atol=1e-4)


def test_the_prompt_and_the_image_carry_no_loss(setup, tmp_path):
    trainer = MLLMTrainer(_args(setup, tmp_path / "run", max_steps=1), progress=False)
    tok = trainer.processor.tokenizer
    conv = load_conversations(setup["data"])[0]
    conv.turns = [("user", "<image>\nwhat is this ?"), ("assistant", "w1 w2"), ("user", "what ?"), ("assistant", "w3")]
    stream = trainer.processor.encode_images([conv.images[0]], quality=4)
    example = trainer.tokenize(conv, streams=stream)
    ids, labels = example.input_ids, example.labels
    words = tok.convert_ids_to_tokens(ids)
    learned = [w for w, lab in zip(words, labels) if lab != IGNORE_INDEX]
    assert learned == ["w1", "w2", "</s>", "w3", "</s>"]  # the answers and the EOS appended to each
    assert all(labels[i] in (IGNORE_INDEX, ids[i]) for i in range(len(ids)))
    image_positions = [i for i, w in enumerate(words) if w == "<image>"]
    assert len(image_positions) == 16 and all(labels[i] == IGNORE_INDEX for i in image_positions)
    first_answer = words.index("w1")
    assert all(lab == IGNORE_INDEX for lab in labels[:first_answer])  # the prompt, up to "ASSISTANT:"

    # the model's loss is the CE of the answers alone: changing a prompt word leaves it, an answer word does not
    batch = trainer.make_batch([0], None, quality=4)
    with torch.no_grad():
        loss = float(trainer.loss(batch)[1])
    inputs = batch.inputs
    labels_t, logits = inputs["labels"][0], _logits(trainer.model, batch)[0]
    pos = (labels_t[1:] != IGNORE_INDEX).nonzero()[:, 0]
    manual = torch.nn.functional.cross_entropy(logits[pos], labels_t[1:][pos])
    assert abs(float(manual) - loss) < 1e-4
    with pytest.raises(ConfigError, match="nothing to train"):
        _args(setup, tmp_path / "x", train_lora=False)
    with pytest.raises(ConfigError, match="needs --train_lora"):
        _args(setup, tmp_path / "x", train_lora=False, train_projector=True, load_in_4bit=True)


def test_a_killed_run_resumes_to_the_same_weights(setup, tmp_path):
    kw = dict(train_projector=True, max_steps=2, batch_size=1)
    straight = train_mllm(_args(setup, tmp_path / "straight", **kw), progress=False)
    # "killed" after the first step: max_minutes≈0 stops right after a checkpoint at step 1
    train_mllm(_args(setup, tmp_path / "killed", max_minutes=1e-9, **kw), progress=False)
    assert (tmp_path / "killed" / "checkpoint-0000001" / "trainable.safetensors").is_file()
    resumed = train_mllm(_args(setup, tmp_path / "killed", **kw), progress=False)
    a = load_file(str(straight / "lora" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "lora" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "killed" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2]
    # a resumed run with other trainable parts is refused, not silently mixed
    with pytest.raises(CheckpointError, match="other parameters"):
        train_mllm(_args(setup, tmp_path / "killed", max_steps=3, batch_size=1), progress=False)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
def test_a_qlora_step_runs_on_cpu(setup, tmp_path):
    from cotam_llava.models import CoTAMLlavaForConditionalGeneration

    trainer = MLLMTrainer(_args(setup, tmp_path / "run", max_steps=2, load_in_4bit=True, gradient_checkpointing=True),
                          progress=False)
    q_proj = trainer.cotam_model.model.language_model.layers[0].self_attn.q_proj
    assert "bitsandbytes" in type(q_proj.base_layer).__module__  # 4-bit base under the LoRA layer
    assert type(trainer.cotam_model.vision_tower.encoder.encoder.layers[0].self_attn.q_proj) is torch.nn.Linear
    before = {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters() if p.requires_grad}
    final = trainer.train()
    after = dict(trainer.unwrapped.named_parameters())
    assert any(not torch.equal(after[n].detach(), p) for n, p in before.items() if "lora_B" in n)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert len(log) == 3 and all(np.isfinite(float(row.split(",")[1])) for row in log[1:])
    # the export holds the full-precision base and the LoRA weights: it loads without bitsandbytes settings too
    loaded = CoTAMLlavaForConditionalGeneration.from_pretrained(final)
    assert torch.isfinite(_logits(loaded, _fixed_batch(trainer))).all()


def test_cli_trains_and_chat_runs_the_fine_tuned_folder(setup, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train-mllm", "--output_dir", str(out), "--model", str(setup["model"]), "--data_path",
                 str(setup["data"]), "--max_steps", "1", "--batch_size", "1", "--threads", "1", "--val_every_nth", "3",
                 "--lora_r", "4"])
    assert code == 0 and (out / "final" / "lora" / "adapter_model.safetensors").is_file()
    assert len((out / "val_log.csv").read_text().splitlines()) == 3  # the held-out answer CE at step 0 and the end
    image = load_conversations(setup["data"])[0].images[0]
    assert main(["chat", "--model", str(out / "final"), str(image), "what is this ?", "--max-new-tokens", "2",
                 "--no-stream"]) == 0
    assert "bits" in capsys.readouterr().err
    # the lmms-eval plugin (and so eval/sweep.py) loads the folder as it is, LoRA applied
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM
    from cotam_llava.models.lora import has_unmerged_lora
    from PIL import Image

    lm = CoTAMLlavaLMM(pretrained=str(out / "final"), codec="cotam-noguide", quality=3)
    assert has_unmerged_lora(lm.model)
    coded = lm._code([Image.open(image).convert("RGB")])
    assert len(lm._generate([lm._prompt("what is this ?", coded)], [coded], {"max_new_tokens": 2})) == 1


def test_cli_errors_are_one_line(setup, tmp_path, capsys):
    assert main(["train-mllm", "--output_dir", str(tmp_path / "r"), "--model", str(setup["model"]),
                 "--data_path", str(tmp_path / "missing.json")]) == 1
    assert "instruction data not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "nope.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                                       {"from": "gpt", "value": "a"}]}]))
    assert main(["train-mllm", "--output_dir", str(tmp_path / "r"), "--model", str(setup["model"]),
                 "--data_path", str(bad)]) == 1
    assert "image not found" in capsys.readouterr().err
    assert main(["train-mllm", "--output_dir", str(tmp_path / "r"), "--model", str(setup["model"]),
                 "--data_path", str(setup["data"]), "--bogus", "1"]) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["train-mllm", "--help"])
    assert exit_info.value.code == 0
    assert "--load_in_4bit" in capsys.readouterr().out


def test_tiny_instruct_is_deterministic_and_in_llava_format(tmp_path):
    a = write_tiny_instruct(tmp_path / "a", samples=5, seed=3)
    b = write_tiny_instruct(tmp_path / "b", samples=5, seed=3)
    assert a.read_text() == b.read_text()
    conversations = load_conversations(a)
    assert len(conversations) == 5 and all(c.images[0].is_file() for c in conversations)
    messages = to_messages(conversations[0])
    assert messages[0]["role"] == "user" and messages[0]["content"][0] == {"type": "image"}
    assert messages[1]["role"] == "assistant"
    with pytest.raises(ImageInputError, match="placeholders"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"image": ["images/00000.png", "images/00001.png"],
                                    "conversations": [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]}]))
        load_conversations(bad, tmp_path / "a")
    assert main(["tiny-instruct", str(tmp_path / "c"), "--samples", "2"]) == 0


def test_codec_fine_tuning_cft_trains_the_codec_with_the_rate_term(setup, tmp_path):
    from cotam_llava.codec.model import CoTAMELIC
    from cotam_llava.models import CoTAMLlavaForConditionalGeneration

    trainer = MLLMTrainer(_args(setup, tmp_path / "run", max_steps=2, train_lora=False, train_codec=True,
                                train_adapter=True, codec_learning_rate=1e-3), progress=False)
    before = {n: p.detach().clone() for n, p in trainer.codec.named_parameters()}
    final = trainer.train()
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trainer.codec.named_parameters())
    row = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[-1].split(",")
    assert float(row[4]) > 0  # the λ-weighted rate term
    codec = CoTAMELIC.from_pretrained(final / "codec")
    assert codec.config.finalized
    assert not (final / "lora").exists() and json.loads((final / "training_info.json").read_text())["trained"] == \
        ["adapter", "codec"]
    # without LoRA the export is a plain CoTAM folder: the trained adapter is in its weights, the codec in codec/
    loaded = CoTAMLlavaForConditionalGeneration.from_pretrained(final)
    trained = trainer.cotam_model.vision_tower.adapter.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in loaded.vision_tower.adapter.state_dict().items())
    from cotam_llava.models import CoTAMProcessor

    processor = CoTAMProcessor.from_pretrained(final, codec=loaded.codec)  # streams of the fine-tuned codec
    inputs = processor(text=tiny_hosts.chat_prompt(processor), images=[load_conversations(setup["data"])[0].images[0]])
    with torch.no_grad():
        assert torch.isfinite(loaded.eval()(**inputs).logits).all()


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_weights(setup, tmp_path):
    a = train_mllm(_args(setup, tmp_path / "a", max_steps=2), progress=False)
    b = train_mllm(_args(setup, tmp_path / "b", max_steps=2, gradient_checkpointing=True), progress=False)
    wa = load_file(str(a / "lora" / "adapter_model.safetensors"))
    wb = load_file(str(b / "lora" / "adapter_model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_prompt_masking_by_prefixes_tolerates_one_merged_token_and_refuses_more():
    from cotam_llava.training.instruct import tokenize_conversation

    messages = [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a"}]}]

    def run(prompt: list[int], whole: list[int]):
        def render(msgs, generation_prompt):
            return "whole" if len(msgs) == 2 else "prompt"

        def encode(text, n_images):
            return {"input_ids": torch.tensor([prompt if text == "prompt" else whole])}

        return tokenize_conversation(render, encode, messages, eos_token_id=9, image_token_id=None, max_length=64)

    exact = run([1, 2, 3], [1, 2, 3, 4, 5])
    assert exact.labels == [IGNORE_INDEX] * 3 + [4, 5, 9] and exact.input_ids == [1, 2, 3, 4, 5, 9]
    merged = run([1, 2, 3], [1, 2, 7, 5])  # the prompt's last token merged with the answer's first
    assert merged.labels == [IGNORE_INDEX] * 2 + [7, 5, 9]
    with pytest.raises(ConfigError, match="cannot be masked"):
        run([1, 2, 3], [1, 8, 7, 5])
    ends_itself = run([1, 2, 3], [1, 2, 3, 4, 9])  # a template that writes EOS: none appended
    assert ends_itself.input_ids == [1, 2, 3, 4, 9] and ends_itself.labels[-2:] == [4, 9]


def test_a_stock_host_and_a_codec_become_the_runs_base_folder(setup, tmp_path):
    stock, stock_proc = tiny_hosts.tiny_host("llava", width=64)
    stock.save_pretrained(tmp_path / "host")
    stock_proc.save_pretrained(tmp_path / "host")
    tiny_hosts.tiny_codec().save_pretrained(tmp_path / "codec")
    final = train_mllm(_args(setup, tmp_path / "run", model=str(tmp_path / "host"), cotam=str(tmp_path / "codec"),
                             max_steps=1, batch_size=1), progress=False)
    base = tmp_path / "run" / "base"
    assert "cotam" in json.loads((base / "config.json").read_text()) and (base / "cotam_processor.json").is_file()
    assert (final / "lora" / "adapter_model.safetensors").is_file()
    assert (final / "model.safetensors").stat().st_ino == (base / "model.safetensors").stat().st_ino  # hard-linked
    with pytest.raises(ConfigError, match="--cotam is for a stock"):
        train_mllm(_args(setup, tmp_path / "other", cotam=str(tmp_path / "codec"), max_steps=1), progress=False)
