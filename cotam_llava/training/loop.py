"""Loop control shared by the trainers: periodic checkpoints and validations, the wall-time limit, the end."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

__all__ = ["start_run", "lr_decay_factor", "average_gradients", "after_step", "finish"]


def start_run(args: Any) -> tuple[Any, Path, bool]:
    """(accelerate ``Accelerator``, run folder (created), whether this is the main process) for ``args``
    (``output_dir``, ``threads``)."""
    import torch
    from accelerate import Accelerator

    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # Processes started by torchrun on a machine without an accelerator: accelerate joins them (gloo) only when told
    # it is on the CPU; otherwise each would train alone on its share of the data, silently.
    accelerator = Accelerator(cpu=world > 1 and not torch.cuda.is_available())
    if accelerator.num_processes != world:
        from ..errors import ConfigError

        raise ConfigError(f"{world} processes were started but accelerate joined {accelerator.num_processes}: each "
                          "would train alone (on CPUs start them with torchrun --nproc_per_node N, docs/training.md)")
    run = Path(args.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    return accelerator, run, accelerator.is_main_process


def lr_decay_factor(step: int, args: Any) -> float:
    """×0.1 for every fraction in ``args.lr_decay_at`` that ``step`` has reached (as a share of ``args.max_steps``)."""
    return 0.1 ** sum(step >= int(f * args.max_steps) for f in args.lr_decay_at)


def average_gradients(accelerator: Any, params: list[Any]) -> None:
    """Average the gradients of ``params`` over the processes (one all-reduce of them all, flattened), for
    parameters trained outside a DDP-wrapped forward; nothing on one process. A missing gradient counts as zero,
    so every process reduces the same buffer."""
    import torch

    if accelerator.num_processes == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def after_step(
    step: int,
    args: Any,
    started: float,
    run: Path,
    bar: Any,
    save_checkpoint: Callable[[int], None],
    validate_and_export: Callable[[int, str], None],
) -> Path | None:
    """What follows optimisation step ``step`` (``args`` has max_steps, save_every, val_every, max_minutes).

    Returns:
        None to go on; the exported ``latest/`` folder of this step when the wall-time limit stopped the run (after
        a checkpoint, so the same command resumes it; validated and exported then whatever ``val_every`` says, so
        the export holds the last step's weights). At ``max_steps`` nothing is done: :func:`finish` follows.
    """
    if step == args.max_steps:
        return None
    out_of_time = args.max_minutes > 0 and (time.time() - started) / 60 > args.max_minutes
    if step % args.save_every == 0 or out_of_time:
        save_checkpoint(step)
    if (args.val_every and step % args.val_every == 0) or out_of_time:
        validate_and_export(step, "latest")
    if out_of_time:
        tqdm.write(f"stopping after {args.max_minutes} minutes at step {step}; resume with the same command")
        bar.close()
        return run / "latest"
    return None


def finish(step: int, run: Path, bar: Any, save_checkpoint: Callable[[int], None],
           validate_and_export: Callable[[int, str], None]) -> Path:
    """The last checkpoint and validation; returns the exported ``final/`` folder."""
    bar.close()
    save_checkpoint(step)
    validate_and_export(step, "final")
    return run / "final"
