"""Training loop of the variable-rate base codec (``cotam train-codec``), on accelerate.

Per step: a batch of random crops, a random quality level or spatial quality map per
sample, the RD loss of :mod:`.losses` (λ from the paper's 10-level table), the entropy
bottleneck's auxiliary loss on its own optimizer. Periodically: a resumable checkpoint
(safetensors + JSON, no pickles) and a validation on held-out photos with **real
bitstreams** (bpp from bytes, PSNR) at several qualities and their BD-rate against WebP on the
same crops, which exports a finalized codec to ``latest/`` and, when that BD-rate is the best of
the run, to ``best/`` (the export to ship: a later step is not always a better codec). At the end the finalized codec goes to ``final/``.
The same code runs on one CPU, one GPU or many (``accelerate launch``; ``torchrun`` on CPUs, docs/training.md).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..codec.model import CoTAMELIC
from ..codec.pipeline import compress_image, decode, pack
from ..imageio import psnr, to_uint8_array
from .arguments import CodecTrainingArguments
from .data import sample_generators, sample_quality_maps, split_files, stream_position, training_crops
from .losses import rate_distortion_loss
from .loop import after_step, finish, lr_decay_factor, start_run
from .state import WeightAverage, latest_checkpoint, load_optimizers, reset_logs, write_checkpoint

__all__ = ["train_codec", "validate_codec"]


def validate_codec(model: CoTAMELIC, files: list[Path], qualities: list[int], max_side: int) -> list[dict]:
    """Real-bitstream bpp and PSNR of ``model`` (finalized) on center crops of ``files``."""
    rows = []
    for name, crop in _center_crops(files, max_side):
        for q in qualities:
            item, _ = compress_image(model, crop, q)
            data = pack(model, [item])
            rec = to_uint8_array(decode(model, data)[0].to_pil())
            rows.append({"image": name, "quality": q, "bpp": len(data) * 8 / crop[..., 0].size, "psnr": psnr(rec, crop)})
    return rows


def compile_transforms(core: CoTAMELIC) -> tuple:
    """``torch.compile``d analysis and synthesis transforms of ``core``, for :func:`using_transforms`.

    Only the transforms: with the entropy models too, the Python control flow breaks the graph and compiling takes
    minutes for no further gain (measured, docs/training.md)."""
    return torch.compile(core.analysis), torch.compile(core.synthesis)


@contextlib.contextmanager
def using_transforms(core: CoTAMELIC, transforms: tuple | None) -> Iterator[None]:
    """While open, ``core`` runs ``transforms`` (from :func:`compile_transforms`; None: unchanged). Only around the
    training forward: a deep copy made for validation or export would otherwise carry functions bound to the
    training weights, and validation's varying crop sizes would recompile."""
    if transforms is None:
        yield
        return
    core.analysis, core.synthesis = transforms
    try:
        yield
    finally:
        del core.analysis, core.synthesis


def _center_crops(files: list[Path], max_side: int) -> list[tuple[str, np.ndarray]]:
    """(name, center crop of at most ``max_side``² with sides multiples of 64) of each file large enough."""
    crops = []
    for path in files:
        img = to_uint8_array(path)
        h, w = img.shape[:2]
        ch, cw = min(h, max_side) // 64 * 64, min(w, max_side) // 64 * 64
        if ch and cw:
            top, left = (h - ch) // 2, (w - cw) // 2
            crops.append((path.name, np.ascontiguousarray(img[top:top + ch, left:left + cw])))
    return crops


#: WebP qualities of the held-out anchor curve (0.1 to ≈ 3 bpp on photos, the learned codec's range).
ANCHOR_QUALITIES = (2, 10, 25, 50, 75, 90, 95)


def webp_anchor(files: list[Path], max_side: int) -> tuple[list[float], list[float]]:
    """Mean bpp and PSNR of WebP (real files, Pillow) over the validation crops, per :data:`ANCHOR_QUALITIES`."""
    from ..codec.classical import classical_codec

    webp = classical_codec("webp")
    crops = _center_crops(files, max_side)
    bpp, quality = [], []
    for q in ANCHOR_QUALITIES:
        points = [(len(data) * 8 / crop[..., 0].size, psnr(webp.decode(data), crop))
                  for _, crop in crops for data in [webp.encode(crop, q)]]
        bpp.append(float(np.mean([b for b, _ in points])))
        quality.append(float(np.mean([p for _, p in points])))
    return bpp, quality


def held_out_bd_rate(summary: dict[int, tuple[float, float]], anchor: tuple[list[float], list[float]]) -> float:
    """BD-rate (PSNR, pchip, percent) of a validation summary against the WebP anchor; NaN when undefined."""
    from ..evaluation.bdrate import bd_rate

    levels = sorted(summary)
    return bd_rate(anchor[0], anchor[1], [summary[q][0] for q in levels], [summary[q][1] for q in levels]).value


def _summarize_val(rows: list[dict], qualities: list[int]) -> dict[int, tuple[float, float]]:
    return {
        q: (float(np.mean([r["bpp"] for r in rows if r["quality"] == q])), float(np.mean([r["psnr"] for r in rows if r["quality"] == q])))
        for q in qualities
    }


def train_codec(args: CodecTrainingArguments, progress: bool = True) -> Path:
    """Train (or resume) a codec run in ``args.output_dir``; returns the exported ``final/`` folder."""
    accelerator, run, main_process = start_run(args)

    resume_from = latest_checkpoint(run) if args.resume else None
    resume_state: dict | None = None
    if resume_from is not None:
        model = CoTAMELIC.from_pretrained(resume_from / "codec")
        resume_state = json.loads((resume_from / "trainer_state.json").read_text())
        start_step = resume_state["step"]
    elif args.init_checkpoint:
        model = CoTAMELIC.from_pretrained(args.init_checkpoint)
        start_step = 0
    else:
        model = CoTAMELIC.from_preset(args.preset, seed=args.seed)
        start_step = 0
    model.config.finalized = False  # training changes the weights; only exports are finalized
    model.set_rate_quantizer(args.rate_quantizer)
    model.train()
    if main_process:
        (run / "training_args.json").write_text(args.to_json())

    main_params = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    optimizer = torch.optim.Adam(main_params, lr=args.learning_rate)
    aux_optimizer = torch.optim.Adam(aux_params, lr=args.aux_learning_rate)
    if resume_from is not None:
        load_optimizers({"main": optimizer, "aux": aux_optimizer}, resume_from)
    model, optimizer, aux_optimizer = accelerator.prepare(model, optimizer, aux_optimizer)
    core: CoTAMELIC = accelerator.unwrap_model(model)
    average = WeightAverage(core, args.ema_decay) if args.ema_decay else None
    transforms = compile_transforms(core) if args.compile else None
    if average is not None and resume_from is not None:
        if (resume_from / WeightAverage.FILE).is_file():
            average.load(resume_from)
        else:
            tqdm.write(f"{resume_from} holds no weight average (the run kept none so far): it starts from its weights")

    train_files, val_files = split_files(args.data_dirs, args.val_every_nth)
    crops = training_crops(args, train_files, args.crop_size, accelerator, resume_state, zoom_out=args.crop_zoom_out)
    Q = core.config.num_qualities
    lambdas = torch.tensor([core.config.lambda_for_quality(q) for q in range(Q)])
    grid = (args.crop_size // 16, args.crop_size // 16)

    log_path, val_path, bd_path = run / "train_log.csv", run / "val_log.csv", run / "val_bdrate.csv"
    raw_bd_path = run / "val_bdrate_raw.csv"  # with --ema_decay: the training weights' BD-rate beside the average's
    log_fields = ["step", "loss", "mse", "psnr", "bpp", "aux_loss", "lr", "sec_per_step"]
    val_fields = ["step", "quality", "bpp", "psnr"]
    if main_process:
        logs = {log_path: log_fields, val_path: val_fields, bd_path: ["step", "bd_rate_vs_webp"]}
        if average is not None:
            logs[raw_bd_path] = ["step", "bd_rate_vs_webp"]
        reset_logs(logs, start_step if resume_from is not None else None)
    anchor: tuple[list[float], list[float]] | None = None
    best_path = run / "best" / "validation.json"

    def save_checkpoint(step: int) -> None:
        extra = stream_position(crops, accelerator)  # on every process: it gathers
        if main_process:
            write_checkpoint(run, step, args.keep_checkpoints, save_weights, {"main": optimizer, "aux": aux_optimizer}, extra)

    def save_weights(folder: Path) -> None:
        core.save_pretrained(folder / "codec")
        if average is not None:
            average.save(folder)

    def measure(export: CoTAMELIC) -> tuple[list[dict], dict[int, tuple[float, float]], float]:
        nonlocal anchor
        rows = validate_codec(export, val_files, args.val_qualities, args.val_max_side)
        summary = _summarize_val(rows, args.val_qualities)
        if anchor is None:
            anchor = webp_anchor(val_files, args.val_max_side)
        return rows, summary, held_out_bd_rate(summary, anchor)

    def finalized_copy(weights: WeightAverage | None) -> CoTAMELIC:
        export = copy.deepcopy(core).eval()
        if weights is not None:
            weights.copy_to(export)
        export.finalize()
        return export

    def validate_and_export(step: int, target: str) -> None:
        if not main_process:
            return
        export = finalized_copy(average)
        rows, summary, bd = measure(export)
        note = ""
        if average is not None:  # the training weights too, for the comparison; logged, never exported
            raw_bd = bd if step == 0 else measure(finalized_copy(None))[2]  # at step 0 the average is the weights
            with raw_bd_path.open("a", newline="") as f:
                csv.writer(f).writerow([step, f"{raw_bd:.3f}"])
            note = f" (weight average; training weights {raw_bd:+.1f} %)"
        with val_path.open("a", newline="") as f:
            writer = csv.writer(f)
            for q, (bpp, p) in summary.items():
                writer.writerow([step, q, f"{bpp:.5f}", f"{p:.3f}"])
        with bd_path.open("a", newline="") as f:
            csv.writer(f).writerow([step, f"{bd:.3f}"])
        record = json.dumps({"step": step, "bd_rate_vs_webp": bd, "rows": rows}, indent=1)
        export.save_pretrained(run / target)
        (run / target / "validation.json").write_text(record)
        best = json.loads(best_path.read_text())["bd_rate_vs_webp"] if best_path.is_file() else float("inf")
        if bd < best:  # NaN never wins
            export.save_pretrained(run / "best")
            best_path.write_text(record)
        tqdm.write("val step {}: ".format(step) + ", ".join(f"q{q} {b:.3f} bpp {p:.2f} dB" for q, (b, p) in summary.items())
                   + f"; BD-rate vs WebP {bd:+.1f} %{note}" + (" (best so far: exported to best/)" if bd < best else ""))

    if resume_from is None and args.init_checkpoint:
        validate_and_export(0, "latest")  # the starting point, measured the same way
    started = time.time()
    bar = tqdm(total=args.max_steps, initial=start_step, desc="train-codec", unit="step",
               disable=not (progress and main_process))
    t_last, step = time.time(), start_step
    while step < args.max_steps:
        # data: sample i of the step's global batch from (seed, step, i) (so N processes × b = one × N·b);
        # quantisation noise from (seed, step, process)
        rngs = sample_generators(args.seed, step, accelerator.process_index, args.batch_size)
        torch.manual_seed(int(np.random.default_rng([args.seed, step, accelerator.process_index, 1]).integers(2**62)))
        x = torch.cat([crops.batch(r, 1) for r in rngs]).to(accelerator.device)
        qmap = torch.cat([sample_quality_maps(r, 1, grid, Q, args.map_probability) for r in rngs]).to(accelerator.device)
        ramp = min(1.0, (step + 1) / args.lr_ramp_steps) if args.lr_ramp_steps else 1.0
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * ramp * lr_decay_factor(step, args)

        with using_transforms(core, transforms):
            out = model(x, qmap)
        rd = rate_distortion_loss(out, x, lambdas, qmap)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(rd.loss)
        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(main_params, args.max_grad_norm)
        optimizer.step()
        aux = core.aux_loss()
        aux_optimizer.zero_grad(set_to_none=True)
        accelerator.backward(aux)
        aux_optimizer.step()
        if average is not None:
            average.update(core)
        step += 1
        bar.update()

        if main_process and (step % args.log_every == 0 or step == args.max_steps):
            now = time.time()
            sec = (now - t_last) / args.log_every
            t_last = now
            with log_path.open("a", newline="") as f:
                csv.writer(f).writerow([step, f"{rd.loss.item():.5f}", f"{rd.mse.item():.6f}", f"{rd.psnr:.3f}",
                                        f"{rd.bpp.item():.4f}", f"{aux.item():.3f}", optimizer.param_groups[0]["lr"], f"{sec:.3f}"])
            bar.set_postfix(loss=f"{rd.loss.item():.3f}", bpp=f"{rd.bpp.item():.3f}", psnr=f"{rd.psnr:.2f}")
        stopped = after_step(step, args, started, run, bar, save_checkpoint, validate_and_export)
        if stopped is not None:
            return stopped
    return finish(step, run, bar, save_checkpoint, validate_and_export)
