"""Fine-tuning the host MLLM on CoTAM inputs with its own next-token loss (``cotam train-mllm``), on accelerate + peft.

The paper's appendix A.5 compares three ways of fitting a codec to an MLLM; the flags choose what trains::

    default           LoRA on the language model, codec frozen          (ELIC-MFT; with the CoTAM adapter: CoTAM+MFT)
    --train_projector the multimodal projector, in full
    --train_adapter   the CoTAM adapter, with the MLLM's loss           (the adapter's task-loss variant)
    --train_codec     the codec, with the rate term                     (ELIC-CFT; add --no_train_lora for the MLLM frozen)
    --load_in_4bit    QLoRA: the language model in bitsandbytes NF4, prepare_model_for_kbit_training

Per step (micro-batches × gradient accumulation)::

    conversation (LLaVA JSON) ─host chat template─▶ tokens; labels = the answers' tokens (+EOS), the prompt masked
    each image, at a random base quality q (guided map when the tower names a guidance model):
      codec frozen: the edge encoder (CoTAMProcessor) ─▶ real .cotam bitstreams ─▶ the model decodes them itself
      --train_codec: canvas picture ─codec forward (train mode, differentiable)─▶ x̂, ŷ ─▶ host views + ŷ views
    L = CE(answers)  [+ rate_weight · Σ λ_q·bits / pixels with --train_codec]

Run folder: ``base/`` (the starting CoTAM folder, copied or built once), ``checkpoint-*/`` (the trained tensors in
``trainable.safetensors``, the codec when it trains, optimizer state: safetensors + JSON, no pickles), ``train_log.csv``,
``val_log.csv``, ``training_args.json`` and the exports ``latest/``, ``final/``: complete CoTAM model folders
(``base/`` hard-linked) with the LoRA weights in the PEFT layout under ``lora/`` (:mod:`cotam_llava.models.lora`),
which ``from_pretrained``, ``cotam chat``, the lmms-eval plugin and ``eval/sweep.py`` load as they are. Without LoRA
the export is a plain CoTAM folder with the trained modules in its weights. Batches, qualities and dropout are pure
functions of ``(seed, step)``: a killed run resumes to the same weights.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import CheckpointError, ConfigError
from .arguments import MLLMTrainingArguments
from .instruct import IGNORE_INDEX, Conversation, load_conversations, to_messages, tokenize_conversation
from .loop import after_step, finish, lr_decay_factor, start_run
from .losses import lambda_weighted_rate
from .state import latest_checkpoint, load_optimizers, reset_logs, write_checkpoint

__all__ = ["train_mllm", "MLLMTrainer", "TRAINABLE_WEIGHTS", "BASE_SUBFOLDER", "TRAINING_INFO"]

TRAINABLE_WEIGHTS = "trainable.safetensors"
BASE_SUBFOLDER = "base"
TRAINING_INFO = "training_info.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _is_cotam_folder(path: Path) -> bool:
    try:
        return path.is_dir() and "cotam" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def _link_tree(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy ``src`` into ``dst`` with hard links where the file system allows (the run's own ``base/`` is never
    written again, so exports can share its bytes), else copies."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] in skip:
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def prepare_base(args: MLLMTrainingArguments, run: Path) -> Path:
    """The run's starting CoTAM folder ``run/base``: a copy of ``--model`` when that is a CoTAM folder, else the stock
    host with ``--cotam`` built into one (non-quantized, saved once). Reused as it is when a run resumes."""
    base = run / BASE_SUBFOLDER
    if (base / "config.json").is_file() and (base / "cotam_processor.json").is_file():
        return base
    tmp = run / f"{BASE_SUBFOLDER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    source = Path(args.model).expanduser()
    if _is_cotam_folder(source):
        from ..models.lora import LORA_SUBFOLDER

        if (source / LORA_SUBFOLDER).exists():
            raise CheckpointError(f"{source} is already fine-tuned (it has {LORA_SUBFOLDER}/): save a merged copy "
                                  "first (from_pretrained(folder, merge_lora=True).save_pretrained(NEW) and the "
                                  "processor's save_pretrained(NEW)) and train from that")
        if not (source / "cotam_processor.json").is_file():
            raise CheckpointError(f"{source} has no cotam_processor.json: save the CoTAMProcessor beside the model "
                                  "(processor.save_pretrained(folder))")
        if args.cotam:
            raise ConfigError("--cotam is for a stock --model; a CoTAM folder brings its own codec/")
        shutil.copytree(source, tmp)
    else:
        from ..models.loading import load_cotam

        dtype = args.dtype if args.dtype != "auto" else "bfloat16" if torch.cuda.is_available() else "float32"
        model, processor = load_cotam(args.model, args.cotam, device="cpu", dtype=dtype)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        del model
    tmp.rename(base)
    return base


@dataclass
class _Batch:
    inputs: dict[str, Any]
    views: torch.Tensor | None = None  # --train_codec: differentiable host views of x̂
    latents: torch.Tensor | None = None  # --train_codec: ŷ views for the adapter
    rate: torch.Tensor | None = None  # --train_codec: Σ λ·bits / pixels
    bpp: float | None = None  # rate of the batch's images (real bytes when coded, else the estimate)
    quality: float | None = None  # mean base quality


class MLLMTrainer:
    """One ``train-mllm`` run: the model with its trainable parts, the data, the step, checkpoints and exports.

    Use :func:`train_mllm`; the pieces (``make_batch``, ``loss``, ``export``) are public for tests and tools.
    """

    def __init__(self, args: MLLMTrainingArguments, progress: bool = True) -> None:
        self.args = args
        self.progress = progress
        self.accelerator, self.run, self.main_process = start_run(args)
        self.conversations = load_conversations(args.data_path, args.image_folder)  # bad data fail before any loading
        if self.main_process:
            self.base = prepare_base(args, self.run)
        self.accelerator.wait_for_everyone()
        self.base = self.run / BASE_SUBFOLDER
        self.device = self.accelerator.device
        self.resume_from = latest_checkpoint(self.run) if args.resume else None
        self._load_model()
        self._load_data()

    # ------------------------------------------------------------------ model
    def _dtype(self) -> torch.dtype:
        if self.args.dtype == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else torch.float32
        return _DTYPES[self.args.dtype]

    def _load_model(self) -> None:
        from transformers import AutoModelForImageTextToText

        from .._transformers import quiet_transformers
        from ..codec.model import CoTAMELIC
        from ..models import CoTAMProcessor
        from ..models.lora import require_peft

        args = self.args
        if args.train_lora:
            require_peft()
        dtype = self._dtype()
        kwargs: dict[str, Any] = {"dtype": dtype}
        if args.load_in_4bit:
            from transformers import BitsAndBytesConfig

            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise ConfigError("--load_in_4bit needs bitsandbytes: pip install 'cotam-llava[quant]'") from None
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=args.bnb_4bit_quant_type, bnb_4bit_compute_dtype=dtype,
                bnb_4bit_use_double_quant=True,
                llm_int8_skip_modules=["model.vision_tower", "model.multi_modal_projector", "lm_head"])
            kwargs["device_map"] = {"": str(self.device)}
        with quiet_transformers():
            model = AutoModelForImageTextToText.from_pretrained(str(self.base), apply_lora=False, **kwargs)
        tower = model.vision_tower
        codec = model.codec
        if self.resume_from is not None and args.train_codec:
            codec = CoTAMELIC.from_pretrained(self.resume_from / "codec")
        tower.cotam_config.decode_device = str(self.device)
        tower.set_codec(codec)
        self.codec = tower.codec
        anyres = bool(tower.cotam_config.image_processor.get("image_grid_pinpoints")) or tower.cotam_config.canvas_size is None
        if args.train_codec and anyres:
            raise ConfigError("--train_codec needs a host with one square view per image (LLaVA-1.5, InternVL): AnyRes "
                              "hosts (LLaVA-OneVision) tile the decoded picture with PIL, which has no gradient")
        self.processor = CoTAMProcessor.from_pretrained(str(self.base), codec=self.codec, use_guidance=args.guidance)

        model.requires_grad_(False)
        if args.load_in_4bit:
            from peft import prepare_model_for_kbit_training

            with warnings.catch_warnings():  # peft 0.21 calls transformers' deprecated gradient_checkpointing_enable
                warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
                model = prepare_model_for_kbit_training(
                    model, use_gradient_checkpointing=args.gradient_checkpointing,
                    gradient_checkpointing_kwargs={"use_reentrant": False})
        elif args.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.cotam_model = model  # the CoTAM model itself (peft injects its layers in place)
        torch.manual_seed(args.seed)  # LoRA's initialisation
        if args.train_lora:
            from peft import LoraConfig, get_peft_model

            names = "|".join(re.escape(n) for n in args.lora_target_modules)
            modules_to_save = ([("multi_modal_projector")] if args.train_projector else []) + \
                              (["vision_tower.adapter"] if args.train_adapter else [])
            config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                target_modules=rf"model\.language_model\..*\.({names})", bias="none",
                                modules_to_save=modules_to_save or None)
            try:
                with warnings.catch_warnings():  # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    model = get_peft_model(model, config)
            except ValueError as exc:
                raise ConfigError(f"LoRA: {str(exc).splitlines()[0]} (lora_target_modules "
                                  f"{args.lora_target_modules} under model.language_model)") from exc
        else:
            if args.train_projector:
                model.model.multi_modal_projector.requires_grad_(True)
            if args.train_adapter:
                model.vision_tower.adapter.requires_grad_(True)
        self.codec.requires_grad_(args.train_codec)
        if args.train_codec:
            self.codec.config.finalized = False  # training changes the weights; only exports are finalized

        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.trainable_names = [n for n, _ in named]
        if self.resume_from is not None:
            self._load_trainable(model, self.resume_from)
        lora = [p for n, p in named if "lora_" in n]
        modules = [p for n, p in named if "lora_" not in n]
        groups = [(lora, args.learning_rate), (modules, args.module_learning_rate)]
        self.codec_params: list[torch.nn.Parameter] = []
        if args.train_codec:
            self.codec_params = [p for n, p in self.codec.named_parameters() if not n.endswith("quantiles")]
            groups.append((self.codec_params, args.codec_learning_rate))
        groups = [(params, lr) for params, lr in groups if params]
        self.base_lrs = [lr for _, lr in groups]
        optimizer = torch.optim.AdamW([{"params": params, "lr": lr} for params, lr in groups], lr=args.learning_rate,
                                      weight_decay=args.weight_decay)
        self.optimizers: dict[str, torch.optim.Optimizer] = {"main": optimizer}
        if args.train_codec:
            self.optimizers["aux"] = torch.optim.Adam(
                [p for n, p in self.codec.named_parameters() if n.endswith("quantiles")], lr=args.aux_learning_rate)
        if self.resume_from is not None:
            load_optimizers(self.optimizers, self.resume_from)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.optimizers["main"] = self.optimizer
        self.lambdas = torch.tensor([self.codec.config.lambda_for_quality(q) for q in range(self.codec.config.num_qualities)])
        self.start_step = 0 if self.resume_from is None else json.loads((self.resume_from / "trainer_state.json").read_text())["step"]

    @property
    def unwrapped(self) -> Any:
        """The trained model (a ``PeftModel`` with LoRA, else the CoTAM model), without accelerate's wrapper."""
        return self.accelerator.unwrap_model(self.model)

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        params = dict(self.unwrapped.named_parameters())
        return {n: params[n].detach().cpu().contiguous() for n in self.trainable_names}

    def _load_trainable(self, model: Any, folder: Path) -> None:
        from safetensors.torch import load_file

        try:
            state = load_file(str(folder / TRAINABLE_WEIGHTS))
        except OSError as exc:
            raise CheckpointError(f"cannot read {folder / TRAINABLE_WEIGHTS}: {exc}") from exc
        if set(state) != set(self.trainable_names):
            raise CheckpointError(f"{folder} was written by a run that trained other parameters (change the flags "
                                  "back, or use a new output_dir)")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    # ------------------------------------------------------------------ data
    def _load_data(self) -> None:
        args = self.args
        conversations = self.conversations
        if args.val_every_nth:
            self.val_set = conversations[::args.val_every_nth]
            self.train_set = [c for i, c in enumerate(conversations) if i % args.val_every_nth]
        else:
            self.val_set, self.train_set = [], conversations
        if not self.train_set:
            raise ConfigError("no training conversations left after holding out every val_every_nth-th")
        Q = self.codec.config.num_qualities
        self.qualities = list(range(Q)) if args.qualities is None else args.qualities
        if any(not 0 <= q < Q for q in self.qualities):
            raise ConfigError(f"qualities must be in [0, {Q - 1}], got {self.qualities}")
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        image_token = getattr(self.processor.host, "image_token", None)
        self.image_token_id = tok.convert_tokens_to_ids(image_token) if image_token else None

    def sample_indices(self, step: int, micro: int) -> list[int]:
        """Training conversations of micro-batch ``micro`` of ``step``: epoch-wise permutations (seeded by the
        epoch), so each conversation is seen once per epoch; a pure function of (seed, step, micro, process)."""
        args = self.args
        n = len(self.train_set)
        per_step = args.batch_size * args.gradient_accumulation_steps * self.accelerator.num_processes
        first = step * per_step + (micro * self.accelerator.num_processes + self.accelerator.process_index) * args.batch_size
        out = []
        for pos in range(first, first + args.batch_size):
            epoch, k = divmod(pos, n)
            out.append(int(np.random.default_rng([args.seed, epoch]).permutation(n)[k]))
        return out

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=generation_prompt)

    def _special_tokens(self, text: str) -> dict[str, Any]:
        bos = self.processor.tokenizer.bos_token
        return {"add_special_tokens": False} if bos is not None and text.startswith(bos) else {}

    def tokenize(self, conversation: Conversation, streams: list[bytes] | None = None,
                 sizes: list[tuple[int, int]] | None = None):
        """Tokens, labels and image features of a conversation whose images are ``streams`` (real bitstreams) or,
        for the differentiable path, stand-ins of ``sizes`` ((width, height) each)."""
        def encode(text: str, n_images: int) -> dict[str, Any]:
            if streams is not None:
                return self.processor(text=text, bitstreams=streams[:n_images] or None, **self._special_tokens(text))
            stand_ins = [np.zeros((h, w, 3), dtype=np.uint8) for w, h in (sizes or [])[:n_images]]
            return self.processor.host(text=[text], images=stand_ins or None, return_tensors="pt",
                                       **self._special_tokens(text))

        return tokenize_conversation(self._render, encode, to_messages(conversation),
                                     self.processor.tokenizer.eos_token_id, self.image_token_id,
                                     self.args.model_max_length, self.args.append_eos)

    def _collate(self, examples: list[Any], streams: list[bytes]) -> dict[str, Any]:
        from ..codec.transport import pack_bitstreams

        length = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), length), dtype=torch.long)
        for i, e in enumerate(examples):
            ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
            labels[i, :len(e.labels)] = torch.tensor(e.labels)
            mask[i, :len(e.input_ids)] = 1
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if streams:
            inputs["pixel_values"] = pack_bitstreams(streams)
        for key in ("image_sizes", "batch_num_images"):
            parts = [e.features[key] for e in examples if key in e.features]
            if parts:
                inputs[key] = torch.cat([torch.as_tensor(p) for p in parts])
        return inputs

    def make_batch(self, indices: list[int], rng: np.random.Generator | None, pool: list[Conversation] | None = None,
                   quality: int | None = None, differentiable: bool | None = None) -> _Batch:
        """The inputs of conversations ``pool[indices]`` (default: the training set), each image at a base quality
        drawn from ``rng`` (or ``quality``): real bitstreams, or the codec's differentiable forward (``--train_codec``)."""
        from ..imageio import to_pil

        pool = self.train_set if pool is None else pool
        differentiable = self.args.train_codec if differentiable is None else differentiable
        examples, streams, pictures, levels, bits, pixels = [], [], [], [], 0, 0
        for i in indices:
            conv = pool[i]
            qs = [int(quality) if quality is not None else int(rng.choice(self.qualities)) for _ in conv.images]
            levels += qs
            if differentiable:
                images = [to_pil(p) for p in conv.images]
                pictures += list(zip(images, qs))
                canvas = self._canvas()
                examples.append(self.tokenize(conv, sizes=[(canvas, canvas)] * len(images)))
            else:
                coded = [self.processor.encode_images([p], quality=q)[0] for p, q in zip(conv.images, qs)]
                for p, data in zip(conv.images, coded):
                    w, h = to_pil(p).size
                    bits, pixels = bits + 8 * len(data), pixels + w * h
                streams += coded
                examples.append(self.tokenize(conv, streams=coded))
        batch = _Batch(self._collate(examples, streams), quality=float(np.mean(levels)) if levels else None,
                       bpp=bits / pixels if pixels else None)
        if pictures:
            self._simulate(batch, pictures)
        return batch

    def _canvas(self) -> int:
        tower = self.cotam_model.vision_tower
        canvas = tower.cotam_config.canvas_size
        return int(canvas if isinstance(canvas, int) else canvas[0])

    def _simulate(self, batch: _Batch, pictures: list[tuple[Any, int]]) -> None:
        """--train_codec: the edge's canvas pictures through the codec's forward (train mode: differentiable), the
        host's views of x̂ (:meth:`CoTAMVisionTower.preprocess`), the ŷ views and the rate term."""
        from ..codec.pipeline import _to_canvas
        from ..vision.views import full_box, sample_latent

        tower = self.cotam_model.vision_tower
        edge = self.processor._edge()
        canvas = self._canvas()
        xs, maps = [], []
        grid = canvas // 16
        for image, q in pictures:
            picture = edge.picture(image)
            xs.append(_to_canvas(picture, canvas)[0])
            if edge.guidance is not None:
                qmap = edge._quality_map(picture, q, False)
                maps.append(torch.from_numpy(qmap.expand(grid, grid).astype(np.int64)))
            else:
                maps.append(torch.full((grid, grid), q, dtype=torch.long))
        x = torch.cat(xs).to(self.device)
        qmap = torch.stack(maps).to(self.device)
        likelihoods: list[dict[str, torch.Tensor]] = []
        x_hat, y_hat = tower.simulate(x, qmap, likelihoods)
        y_in = tower._adapter_input(y_hat, qmap)
        batch.latents = torch.cat([sample_latent(y[None], [full_box(canvas, canvas)], tower.grid) for y in y_in])
        batch.views = tower.preprocess(x_hat)
        rate, bpp = lambda_weighted_rate(likelihoods[0], self.lambdas.to(qmap.device)[qmap], x.shape[0] * canvas * canvas)
        batch.rate, batch.bpp = rate, float(bpp)

    def loss(self, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, next-token CE of the answers) of a batch; the total adds the rate term with --train_codec."""
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) and k != "pixel_values" else v
                  for k, v in batch.inputs.items()}
        if batch.views is not None:
            inputs["pixel_values"] = batch.views
            with self.cotam_model.vision_tower.attached_latents(batch.latents):
                ce = self.model(**inputs).loss
        else:
            ce = self.model(**inputs).loss
        total = ce if batch.rate is None else ce + self.args.rate_weight * batch.rate
        return total, ce

    # ------------------------------------------------------------------ validation, checkpoints, exports
    def _finalized_codec(self) -> Any:
        codec = copy.deepcopy(self.codec).eval()
        codec.finalize()
        return codec

    def validate(self) -> float | None:
        """Mean answer CE of the held-out conversations on real bitstreams at ``val_quality`` (None without a held-out
        set). With --train_codec the bitstreams come from a finalized copy of the codec as it is now."""
        if not self.val_set:
            return None
        tower = self.cotam_model.vision_tower
        quality = tower.cotam_config.quality if self.args.val_quality is None else self.args.val_quality
        edge = self.processor._edge()
        if self.args.train_codec:
            tower.set_codec(self._finalized_codec())
            edge.codec = tower.codec
        self.model.eval()
        losses, weights = [], []
        try:
            with torch.no_grad():
                for start in range(0, len(self.val_set), self.args.batch_size):
                    idx = list(range(start, min(start + self.args.batch_size, len(self.val_set))))
                    batch = self.make_batch(idx, None, pool=self.val_set, quality=quality, differentiable=False)
                    n = int((batch.inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
                    losses.append(float(self.loss(batch)[1]) * n)
                    weights.append(n)
        finally:
            self.model.train()
            if self.args.train_codec:
                tower.set_codec(self.codec)
                self.codec.train()
                edge.codec = self.codec
        return sum(losses) / max(1, sum(weights))

    def save_checkpoint(self, step: int) -> None:
        if not self.main_process:
            return
        from safetensors.torch import save_file

        def write(folder: Path) -> None:
            save_file(self._trainable_state(), str(folder / TRAINABLE_WEIGHTS))
            if self.args.train_codec:
                self.codec.save_pretrained(folder / "codec")

        write_checkpoint(self.run, step, self.args.keep_checkpoints, write, self.optimizers)

    def export(self, step: int, target: str, val_loss: float | None = None) -> Path:
        """A complete CoTAM model folder ``run/target``: with LoRA, ``base/`` (hard-linked) + ``lora/`` (PEFT layout);
        without, the model saved in full; with --train_codec the finalized codec in ``codec/``."""
        from ..models import CODEC_SUBFOLDER
        from ..models.lora import LORA_SUBFOLDER

        folder = self.run / target
        tmp = self.run / f"{target}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model = self.unwrapped
        skip = (CODEC_SUBFOLDER,) if self.args.train_codec else ()
        if self.args.train_lora:
            _link_tree(self.base, tmp, skip=skip + (LORA_SUBFOLDER,))
            model.save_pretrained(str(tmp / LORA_SUBFOLDER), safe_serialization=True)
            config_path = tmp / LORA_SUBFOLDER / "adapter_config.json"
            config = json.loads(config_path.read_text())
            config["base_model_name_or_path"] = ".."  # the enclosing CoTAM folder
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        else:
            model.save_pretrained(str(tmp))
            self.processor.save_pretrained(str(tmp))
        if self.args.train_codec:
            shutil.rmtree(tmp / CODEC_SUBFOLDER, ignore_errors=True)
            self._finalized_codec().save_pretrained(tmp / CODEC_SUBFOLDER)
        trained = [name for name, on in (("lora", self.args.train_lora), ("projector", self.args.train_projector),
                                         ("adapter", self.args.train_adapter), ("codec", self.args.train_codec)) if on]
        info = {"step": step, "trained": trained, "val_loss": val_loss, "load_in_4bit": self.args.load_in_4bit,
                "data_path": self.args.data_path, "base": str(Path(self.args.model))}
        (tmp / TRAINING_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return folder

    def validate_and_export(self, step: int, target: str) -> None:
        val_loss = self.validate()
        if not self.main_process:
            return
        if val_loss is not None:
            with (self.run / "val_log.csv").open("a", newline="") as f:
                csv.writer(f).writerow([step, f"{val_loss:.6f}"])
            tqdm.write(f"val step {step}: answer CE {val_loss:.4f}")
        self.export(step, target, val_loss)

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path:
        args, acc = self.args, self.accelerator
        log_path = self.run / "train_log.csv"
        if self.main_process:
            (self.run / "training_args.json").write_text(args.to_json())
            reset_logs({log_path: ["step", "loss", "ce", "bpp", "rate", "quality", "lr", "sec_per_step"],
                        self.run / "val_log.csv": ["step", "val_loss"]},
                       self.start_step if self.resume_from is not None else None)
        if self.resume_from is None and self.val_set:  # the starting model, measured the same way (MFT baselines)
            val_loss = self.validate()
            if self.main_process:
                with (self.run / "val_log.csv").open("a", newline="") as f:
                    csv.writer(f).writerow([0, f"{val_loss:.6f}"])
                tqdm.write(f"val step 0: answer CE {val_loss:.4f}")
        self.model.train()
        if args.train_codec:
            self.codec.train()
        started = time.time()
        bar = tqdm(total=args.max_steps, initial=self.start_step, desc="train-mllm", unit="step",
                   disable=not (self.progress and self.main_process))
        t_last, step = time.time(), self.start_step
        while step < args.max_steps:
            for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base_lr * min(1.0, (step + 1) / max(1, args.lr_ramp_steps)) * lr_decay_factor(step, args)
            # dropout and the codec's training noise depend on (seed, step, process) only
            torch.manual_seed(int(np.random.default_rng([args.seed, step, acc.process_index, 1]).integers(2**62)))
            self.optimizer.zero_grad(set_to_none=True)
            totals, ces, rates, bpps, qs = [], [], [], [], []
            for micro in range(args.gradient_accumulation_steps):
                rng = np.random.default_rng([args.seed, step, micro, acc.process_index])
                batch = self.make_batch(self.sample_indices(step, micro), rng)
                total, ce = self.loss(batch)
                acc.backward(total / args.gradient_accumulation_steps)
                totals.append(float(total.detach()))
                ces.append(float(ce.detach()))
                rates += [] if batch.rate is None else [float(batch.rate.detach())]
                bpps += [] if batch.bpp is None else [batch.bpp]
                qs += [] if batch.quality is None else [batch.quality]
            if self.codec_params and acc.num_processes > 1:  # the codec is not part of the prepared model
                for p in self.codec_params:
                    if p.grad is not None:
                        p.grad = acc.reduce(p.grad, reduction="mean")
            if args.max_grad_norm > 0:
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                acc.clip_grad_norm_(params, args.max_grad_norm)
            self.optimizer.step()
            if args.train_codec:
                aux = self.codec.aux_loss()
                self.optimizers["aux"].zero_grad(set_to_none=True)
                aux.backward()
                self.optimizers["aux"].step()
            step += 1
            bar.update()
            if self.main_process and (step % args.log_every == 0 or step == args.max_steps):
                now = time.time()
                sec, t_last = (now - t_last) / args.log_every, now
                with log_path.open("a", newline="") as f:
                    csv.writer(f).writerow([
                        step, f"{np.mean(totals):.6f}", f"{np.mean(ces):.6f}", f"{np.mean(bpps):.4f}" if bpps else "",
                        f"{np.mean(rates):.6f}" if rates else "", f"{np.mean(qs):.2f}" if qs else "",
                        f"{self.optimizer.param_groups[0]['lr']:.3g}", f"{sec:.3f}"])
                bar.set_postfix(loss=f"{np.mean(totals):.4f}")
            stopped = after_step(step, args, started, self.run, bar, self.save_checkpoint, self.validate_and_export)
            if stopped is not None:
                return stopped
        return finish(step, self.run, bar, self.save_checkpoint, self.validate_and_export)


def train_mllm(args: MLLMTrainingArguments, progress: bool = True) -> Path:
    """Train (or resume) a ``train-mllm`` run in ``args.output_dir``; returns the exported ``final/`` (or ``latest/``
    when ``max_minutes`` stopped it)."""
    return MLLMTrainer(args, progress).train()
