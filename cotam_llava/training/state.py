"""Resumable training state without pickles: tensors in safetensors, the rest in JSON.

A checkpoint folder ``checkpoint-0001200/`` holds ``codec/`` (config.json +
model.safetensors), ``optimizers.safetensors`` + ``optimizers.json`` (every optimizer's
state dict, split into tensors and JSON scalars), ``trainer_state.json`` (the step) and, for runs
that keep one, ``ema.safetensors`` (the moving average of the weights, :class:`WeightAverage`).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

__all__ = [
    "save_optimizers", "load_optimizers", "latest_checkpoint", "prune_checkpoints", "write_checkpoint", "reset_logs",
    "CHECKPOINT_PREFIX", "WeightAverage",
]

CHECKPOINT_PREFIX = "checkpoint-"


def save_optimizers(optimizers: dict[str, torch.optim.Optimizer], folder: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, st in sd["state"].items():
            for key, value in st.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{name}.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars, "ids": [str(p) for p in sd["state"]]}
    save_file(tensors, str(folder / "optimizers.safetensors"))
    (folder / "optimizers.json").write_text(json.dumps(meta, indent=1))


def load_optimizers(optimizers: dict[str, torch.optim.Optimizer], folder: Path) -> None:
    try:
        tensors = load_file(str(folder / "optimizers.safetensors"))
        meta = json.loads((folder / "optimizers.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the optimizer state in {folder}: {exc}") from exc
    for name, opt in optimizers.items():
        if name not in meta:
            raise CheckpointError(f"{folder}: no state for optimizer {name!r}")
        state: dict[int, dict[str, Any]] = {}
        for pid in meta[name]["ids"]:
            entry = dict(meta[name]["scalars"].get(pid, {}))
            prefix = f"{name}.{pid}."
            entry.update({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            state[int(pid)] = entry
        opt.load_state_dict({"state": state, "param_groups": meta[name]["param_groups"]})


class WeightAverage:
    """Exponential moving average of a module's parameters, kept beside the training weights (which it never
    touches): after each optimisation step ``avg ← decay·avg + (1 − decay)·w``. It starts from the module's
    weights, so it needs no bias correction when training continues a trained model."""

    FILE = "ema.safetensors"

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for name, p in module.named_parameters():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        """Load the averaged weights into ``module`` (a copy of the trained one: same parameter names)."""
        for name, p in module.named_parameters():
            p.copy_(self.shadow[name])

    def save(self, folder: Path) -> None:
        save_file({n: t.contiguous() for n, t in self.shadow.items()}, str(folder / self.FILE))

    def load(self, folder: Path) -> None:
        try:
            tensors = load_file(str(folder / self.FILE))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the weight average in {folder}: {exc}") from exc
        if tensors.keys() != self.shadow.keys() or any(tensors[n].shape != t.shape for n, t in self.shadow.items()):
            raise CheckpointError(f"{folder / self.FILE} does not hold the weights of this model")
        self.shadow = {n: tensors[n].to(t.dtype) for n, t in self.shadow.items()}


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder in ``run_dir`` (one with trainer_state.json)."""
    done = [p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: json.loads((p / "trainer_state.json").read_text())["step"], default=None)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    done = sorted(
        (p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.json").is_file()),
        key=lambda p: json.loads((p / "trainer_state.json").read_text())["step"],
    )
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(
    run_dir: Path, step: int, keep: int, write: Callable[[Path], None], optimizers: dict[str, torch.optim.Optimizer],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoint-{step}`` atomically: ``write(folder)`` adds the model files, then the optimizer state and
    ``trainer_state.json`` (the step and ``extra``, e.g. a stream's position); the folder appears under its final
    name only when complete; old ones are pruned."""
    folder = run_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    write(tmp)
    save_optimizers(optimizers, tmp)
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **(extra or {})}))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    prune_checkpoints(run_dir, keep)
    return folder


def reset_logs(logs: dict[Path, list[str]], resume_step: int | None) -> None:
    """(Re)create CSV logs with their header; when resuming, keep the rows up to ``resume_step`` (those logged
    after the checkpoint would be logged again)."""
    for path, fields in logs.items():
        kept: list[list[str]] = []
        if path.exists() and resume_step is not None:
            with path.open(newline="") as f:
                kept = [row for row in list(csv.reader(f))[1:] if row and int(row[0]) <= resume_step]
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(fields)
            writer.writerows(kept)
