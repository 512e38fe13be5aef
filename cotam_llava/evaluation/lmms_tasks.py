"""Task-side helpers for the lmms-eval tasks in ``eval/tasks``: local data and a rate metric beside the scores.

::

    YAML  class: !function cotam_llava.evaluation.lmms_tasks.LocalDataTask
          dataset_path: ${COTAM_DATA_MME}                  ← an environment variable (or a literal path)
          process_docs: !function cotam_llava.evaluation.lmms_tasks.add_doc_keys
          process_results: !function utils.process_results  ← with_rate(lmms-eval's own function)

    LocalDataTask.download  ─expand ${VAR}, check the folder─▶ load_from_disk (save_to_disk folders)
                                                               or load_dataset(folder) (hub snapshots: parquet…)
    add_doc_keys            ─one "cotam_doc_key" column (dataset fingerprint : row)─▶ docs
    CoTAMLlavaLMM.generate_until ─records each request's real bits under the doc's key─▶ RATE_LEDGER
    with_rate(process_results)(doc, results) ─the task's own metrics + {"bpp": …, ["bits_per_frame": …]}
                                              looked up by the doc's key─▶ lmms-eval aggregates them ("mean")
                                              into results["results"][task]["bpp,none"], next to the scores

Why a ledger keyed by a doc column: lmms-eval calls ``process_results(doc, results)`` with the document
and the *text* of the answers only (answers are stripped and re-created as plain strings on the way, and
the call carries no ``doc_id``), while the model sees ``(task, split, doc_id)`` and the document itself.
A key column added by ``process_docs`` is present on both sides (also in lmms-eval's media-free copy of
the documents), so the link needs no change to lmms-eval and no guessing from document contents.
With another model (no ledger entries) the rate metrics are simply absent.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError

try:
    from lmms_eval.api.task import ConfigurableTask
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"the lmms-eval tasks need lmms-eval ({exc}): pip install --no-deps lmms-eval==0.7.3 and the eval pins "
        "of requirements/lock-cpu.txt (see README 'Benchmark with lmms-eval')"
    ) from exc

__all__ = [
    "DOC_KEY",
    "SampleRate",
    "RATE_LEDGER",
    "record_rate",
    "clear_rates",
    "rate_metrics",
    "with_rate",
    "add_doc_keys",
    "record_llava_streams",
    "resolve_data_path",
    "LocalDataTask",
]

#: The column :func:`add_doc_keys` adds; the model records bits under its value.
DOC_KEY = "cotam_doc_key"


@dataclass(frozen=True)
class SampleRate:
    """The real bits one request (one document) cost.

    Attributes:
        bits: container / file bytes × 8 of every picture or video of the request (headers included).
        pixels: pixels of the pictures as the task gave them (for a video: of all coded frames).
        frames: coded video frames (0 for images).
        items: pictures (images) or videos in the request.
        kind: "image", "video" or "text" (no visual input: 0 bits).
    """

    bits: int
    pixels: int
    frames: int = 0
    items: int = 1
    kind: str = "image"

    @property
    def bpp(self) -> float | None:
        return self.bits / self.pixels if self.pixels else None

    @property
    def bits_per_frame(self) -> float | None:
        return self.bits / self.frames if self.frames else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bpp": self.bpp, "bits_per_frame": self.bits_per_frame}


#: doc key → the rate of that document's request, filled by the model during ``generate_until``.
RATE_LEDGER: dict[str, SampleRate] = {}
_LOCK = threading.Lock()


def record_rate(key: str, rate: SampleRate) -> None:
    with _LOCK:
        RATE_LEDGER[key] = rate


def clear_rates() -> None:
    with _LOCK:
        RATE_LEDGER.clear()


def rate_metrics(doc: dict) -> dict[str, float]:
    """``{"bpp": …}`` (images; plus ``"bits_per_frame"`` for videos) for a document the model answered.

    Empty when the document carries no key or the model recorded nothing for it (another model, a text-only
    request, a cached answer).
    """
    key = doc.get(DOC_KEY) if isinstance(doc, dict) else None
    rate = RATE_LEDGER.get(key) if key is not None else None
    if rate is None or rate.kind == "text":
        return {}
    out: dict[str, float] = {}
    if rate.bpp is not None:
        out["bpp"] = float(rate.bpp)
    if rate.bits_per_frame is not None:
        out["bits_per_frame"] = float(rate.bits_per_frame)
    return out


def with_rate(process_results: Callable[..., dict]) -> Callable[..., dict]:
    """Wrap a task's ``process_results`` so that it also returns the document's rate metrics."""

    def wrapped(doc: dict, results: list, **kwargs: Any) -> dict:
        out = dict(process_results(doc, results, **kwargs))
        out.update(rate_metrics(doc))
        return out

    wrapped.__name__ = getattr(process_results, "__name__", "process_results")
    wrapped.__doc__ = f"{wrapped.__name__} + the document's bpp (cotam_llava.evaluation.lmms_tasks.with_rate)"
    wrapped.__wrapped__ = process_results  # type: ignore[attr-defined]
    return wrapped


def record_llava_streams(pairs: list[tuple[Any, bytes]]) -> None:
    """Listener for the original LLaVA code base's CoTAM image processor (``lmms-eval --model llava``): pictures
    that carry their document's key (``image.info[DOC_KEY]``, set by the tasks' ``doc_to_visual``) get their
    bitstreams' real bits recorded, summed over the pictures of one processor call. With ``$COTAM_BITS_LOG`` set,
    every coded picture (tagged or not, e.g. the views of ``image_aspect_ratio=pad`` / ``anyres``) also gets a line
    there."""
    log = os.environ.get("COTAM_BITS_LOG")  # as --model cotam_llava: one JSON line per coded picture
    if log:
        import json

        with open(log, "a", encoding="utf-8") as fh:
            for image, stream in pairs:
                size = getattr(image, "size", None)
                pixels = size[0] * size[1] if size else None
                fh.write(json.dumps({"model": "llava", "doc_key": (getattr(image, "info", None) or {}).get(DOC_KEY),
                                     "bits": 8 * len(stream), "pixels": pixels,
                                     "bpp": 8 * len(stream) / pixels if pixels else None}) + "\n")
    totals: dict[str, list[int]] = {}
    for image, stream in pairs:
        key = (getattr(image, "info", None) or {}).get(DOC_KEY)
        if key is None or not hasattr(image, "size"):
            continue
        bits, pixels, items = totals.setdefault(key, [0, 0, 0])
        w, h = image.size
        totals[key] = [bits + 8 * len(stream), pixels + w * h, items + 1]
    for key, (bits, pixels, items) in totals.items():
        record_rate(key, SampleRate(bits, pixels, 0, items))


def add_doc_keys(dataset: Any) -> Any:
    """``process_docs``: add the :data:`DOC_KEY` column (dataset fingerprint and row index), cheaply.

    ``add_column`` appends one string column without rewriting the images. It also lets the original LLaVA code
    base's CoTAM image processor report the bits it codes (:func:`record_llava_streams`), so ``--model llava`` on
    a patched LLaVA gets the same ``bpp`` metric as ``--model cotam_llava``.
    """
    from ..integrations.llava.tower import add_encode_listener

    add_encode_listener(record_llava_streams)
    if DOC_KEY in dataset.column_names:
        return dataset
    prefix = getattr(dataset, "_fingerprint", None) or f"{id(dataset):x}"
    return dataset.add_column(DOC_KEY, [f"{prefix}:{i}" for i in range(len(dataset))])


_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def resolve_data_path(value: str | os.PathLike, task: str = "") -> Path:
    """Expand ``${VAR}`` / ``~`` in a task's ``dataset_path`` and check that the folder exists.

    Raises:
        ConfigError: an unset variable, or no folder there (the message names both).
    """
    text = os.fspath(value)
    for m in _VAR.finditer(text):
        name = m.group(1) or m.group(2)
        if not os.environ.get(name):
            raise ConfigError(f"task {task or '?'}: set {name} to the local copy of its data "
                              f"(dataset_path: {text}); see README 'Benchmark with lmms-eval'")
    path = Path(os.path.expanduser(os.path.expandvars(text)))
    if not path.is_dir():
        raise ConfigError(f"task {task or '?'}: data folder not found: {path} (from dataset_path: {text})")
    return path


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset(Dict).save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


class LocalDataTask(ConfigurableTask):
    """A YAML task whose ``dataset_path`` is a local folder, possibly given by an environment variable.

    Use with ``class: !function cotam_llava.evaluation.lmms_tasks.LocalDataTask`` in the YAML. The
    folder is either a ``save_to_disk`` dataset or a local snapshot of the hub dataset (e.g.
    ``huggingface-cli download lmms-lab/MME --repo-type dataset --local-dir DIR``), read with
    ``datasets.load_dataset(DIR, dataset_name)``. Everything else is lmms-eval's ``ConfigurableTask``.
    """

    def __init__(self, config: dict | None = None, model_name: str | None = None, **kwargs: Any) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        super().__init__(config=config, model_name=model_name, **kwargs)

    def local_data_path(self) -> Path:
        """The folder to read (override to build data on the fly, as the tiny task does)."""
        return resolve_data_path(self.config.dataset_path, self.config.task or "")

    def download(self, dataset_kwargs: dict | None = None) -> None:
        path = self.local_data_path()
        kwargs = dict(dataset_kwargs or {})
        for key in ("video", "cache_dir", "From_YouTube", "token", "builder_script", "create_link"):
            kwargs.pop(key, None)  # hub-download options of the upstream configs mean nothing here
        if _is_saved_dataset(path):
            kwargs["load_from_disk"] = True
        self.DATASET_PATH = str(path)
        super().download(kwargs)
