"""Crafted-stream fuzzing of the cloud decoder, each case isolated from the process that counts it.

An attacker controls every byte of a ``.cotam`` file, CRCs included. The crafters below take real
bitstreams and rewrite them the way an attacker would — canvases relabelled, payloads cut, random or
swapped streams, bit flips, counts and levels changed — and then **recompute every CRC**, so each case
reaches the entropy decoder. Cases are decoded in a worker process (``concurrent.futures`` with the
``spawn`` start method), so a crash or a hang is counted as one instead of ending the run.

Outcomes: ``decoded`` (a picture came back), the name of our own :class:`~cotam_llava.errors.BitstreamError`
subclass (a clean rejection), ``bug:<Type>`` (any other exception: a bug), ``crash`` (the worker died)
and ``hang`` (a batch ran past its time limit). Used by ``eval/fuzz_decoder.py`` and the test suite.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing
import queue
import random
import resource
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["CRAFTERS", "craft_cases", "reference_streams", "FuzzReport", "FuzzWorker", "run_fuzz", "decode_outcome"]

# ---------------------------------------------------------------------------- crafting
_SIDES = [64, 128, 256, 512, 1024, 2048, 3840]


def _container(data: bytes):
    from ..codec.container import parse

    return parse(data)


def _write(container) -> bytes:
    from ..codec.container import serialize

    return serialize(container)  # every CRC recomputed: the case reaches the decoder


def _canvas(rnd: random.Random) -> tuple[int, int]:
    if rnd.random() < 0.2:  # extreme aspect ratios
        return (rnd.choice([4096, 8192]), 64) if rnd.random() < 0.5 else (64, rnd.choice([4096, 8192]))
    return rnd.choice(_SIDES), rnd.choice(_SIDES)


def _resized(item, rnd: random.Random):
    from ..codec.container import ResizeMode

    w, h = _canvas(rnd)
    return replace(item, orig_size=(w, h), canvas_size=(w, h), resize_mode=ResizeMode.PAD)


def _short_payload(c, rnd):
    """A valid header, a large canvas, and no or a few bytes per stream."""
    item = _resized(c.items[0], rnd)
    n = rnd.choice([0, 1, 4, 8, 12])
    return replace(c, items=[replace(item, streams=[rnd.randbytes(n) for _ in item.streams])])


def _relabel_canvas(c, rnd):
    """A real stream relabelled with another canvas."""
    return replace(c, items=[_resized(it, rnd) for it in c.items])


def _random_streams(c, rnd):
    """Random bytes of random lengths (whole words or not) in every stream."""
    def stream() -> bytes:
        n = rnd.choice([8, 16, 64, 256, 1024]) + (rnd.choice([0, 1, 2, 3]) if rnd.random() < 0.3 else 0)
        return rnd.randbytes(n)
    return replace(c, items=[replace(it, streams=[stream() for _ in it.streams]) for it in c.items])


def _edit_streams(c, rnd, edit: Callable[[list[bytes], random.Random], None]):
    """``c`` with ``edit`` applied (in place) to the stream list of one random item."""
    items = list(c.items)
    i = rnd.randrange(len(items))
    streams = list(items[i].streams)
    edit(streams, rnd)
    items[i] = replace(items[i], streams=streams)
    return replace(c, items=items)


def _flip(streams: list[bytes], rnd: random.Random) -> None:
    k = rnd.randrange(len(streams))
    data = bytearray(streams[k])
    for _ in range(rnd.choice([1, 1, 2, 8])):
        if data:
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    streams[k] = bytes(data)


def _cut_or_grow(streams: list[bytes], rnd: random.Random) -> None:
    k = rnd.randrange(len(streams))
    s = streams[k]
    streams[k] = s[: rnd.randrange(len(s) + 1)] if rnd.random() < 0.5 else s + rnd.randbytes(4 * rnd.randint(1, 64))


def _bit_flips(c, rnd):
    """A few bits flipped in one stream."""
    return _edit_streams(c, rnd, _flip)


def _swap_streams(c, rnd):
    """The streams of one item permuted."""
    return _edit_streams(c, rnd, lambda streams, r: r.shuffle(streams))


def _cut_or_extend(c, rnd):
    """One stream cut short or extended by words."""
    return _edit_streams(c, rnd, _cut_or_grow)


def _levels(c, rnd):
    """Another base quality, a random quality map, or another symbol checksum."""
    from ..codec.quality_map import QualityMap

    items = list(c.items)
    i = rnd.randrange(len(items))
    choice = rnd.random()
    if choice < 0.4:
        items[i] = replace(items[i], base_quality=rnd.randrange(16))
    elif choice < 0.8:
        g = rnd.randint(1, 8)
        cells = np.array([[rnd.randrange(16) for _ in range(g)] for _ in range(g)])
        items[i] = replace(items[i], quality_map=QualityMap(cells))
    else:
        items[i] = replace(items[i], symbol_crc=rnd.getrandbits(32))
    return replace(c, items=items)


def _many_items(c, rnd):
    """The items repeated many times (within or beyond the item and pixel budgets)."""
    n = rnd.choice([2, 3, 1025, 5000])
    return replace(c, items=[c.items[j % len(c.items)] for j in range(n)])


#: name → crafter(parsed real container, random.Random) → container to write with fresh CRCs.
CRAFTERS: dict[str, Callable] = {
    "short-payload": _short_payload,
    "relabel-canvas": _relabel_canvas,
    "random-streams": _random_streams,
    "bit-flips": _bit_flips,
    "swap-streams": _swap_streams,
    "cut-or-extend": _cut_or_extend,
    "levels": _levels,
    "many-items": _many_items,
}


def reference_streams(codec) -> list[bytes]:
    """Real bitstreams of ``codec`` to craft from: two synthetic pictures at two levels, and a 3-frame video."""
    from ..codec.pipeline import encode

    yy, xx = np.mgrid[0:128, 0:192]
    pic = np.stack([xx % 256, (yy * 3) % 256, ((xx // 16 + yy // 16) % 2) * 255], -1).astype(np.uint8)
    noisy = np.clip(pic + np.random.default_rng(0).integers(-40, 40, pic.shape), 0, 255).astype(np.uint8)
    return [encode(codec, pic, 2), encode(codec, noisy, codec.config.num_qualities - 1),
            encode(codec, [pic, noisy, pic[::-1].copy()], 5, video=True)]


def craft_cases(references: list[bytes], n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``n`` crafted cases (crafter name, bytes with valid CRCs), cycling through :data:`CRAFTERS`."""
    rnd = random.Random(seed)
    parsed = [_container(r) for r in references]
    names = list(CRAFTERS)
    for i in range(n):
        name = names[i % len(names)]
        yield name, _write(CRAFTERS[name](rnd.choice(parsed), rnd))


# ---------------------------------------------------------------------------- decoding in a worker
_WORKER_CODEC = None


def _init_worker(checkpoint: str, threads: int) -> None:
    global _WORKER_CODEC
    import torch

    from ..codec.model import CoTAMELIC

    torch.set_num_threads(threads)
    _WORKER_CODEC = CoTAMELIC.from_pretrained(checkpoint)


def decode_outcome(codec, data: bytes) -> str:
    """``decoded``, the name of the BitstreamError raised, or ``bug:<Type>`` for anything else."""
    from ..codec.pipeline import iter_decode
    from ..errors import BitstreamError

    try:
        for _ in iter_decode(codec, data):
            pass
        return "decoded"
    except BitstreamError as exc:
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - the point is to count what is not ours
        return f"bug:{type(exc).__name__}: {exc}"[:200]


def _decode_batch(cases: list[bytes]) -> tuple[list[tuple[str, float]], int]:
    out = []
    for data in cases:
        start = time.perf_counter()
        out.append((decode_outcome(_WORKER_CODEC, data), time.perf_counter() - start))
    return out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class FuzzReport:
    """Counts per crafter: outcomes, worst decode time (s) and the workers' peak memory (bytes)."""

    outcomes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    worst_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    total_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    peak_rss: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(sum(c.values()) for c in self.outcomes.values())

    @property
    def bad(self) -> int:
        """Crashes, hangs and exceptions that are not ours."""
        return sum(n for c in self.outcomes.values() for k, n in c.items() if k in ("crash", "hang") or k.startswith("bug:"))

    def table(self) -> str:
        rows = ["| crafter | cases | decoded | clean errors | crashes | hangs | other exceptions | mean s | worst s |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name in sorted(self.outcomes):
            c = self.outcomes[name]
            other = sum(n for k, n in c.items() if k.startswith("bug:"))
            clean = sum(c.values()) - c["decoded"] - c["crash"] - c["hang"] - other
            rows.append(f"| {name} | {sum(c.values())} | {c['decoded']} | {clean} | {c['crash']} | {c['hang']} | {other} "
                        f"| {self.total_seconds[name] / max(sum(c.values()), 1):.4f} | {self.worst_seconds[name]:.3f} |")
        return "\n".join(rows)


class FuzzWorker:
    """A worker process that decodes cases with one codec; replaced by a fresh one after a crash or hang.

    Use as a context manager; :meth:`decode` returns ``(outcome, seconds)`` per case, or None when the
    worker died (``"crash"``) or ran past ``timeout`` (``"hang"``) — then :attr:`last_failure` says which.
    """

    def __init__(self, checkpoint: str | Path, threads: int = 1) -> None:
        self.checkpoint, self.threads = str(checkpoint), threads
        self.peak_rss = 0
        self.last_failure = ""
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(self.checkpoint, self.threads),
        )

    def decode(self, cases: list[bytes], timeout: float) -> list[tuple[str, float]] | None:
        future = self._pool.submit(_decode_batch, cases)
        try:
            results, rss = future.result(timeout=timeout)
        except (concurrent.futures.process.BrokenProcessPool, concurrent.futures.TimeoutError) as exc:
            self.last_failure = "hang" if isinstance(exc, concurrent.futures.TimeoutError) else "crash"
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return None
        self.peak_rss = max(self.peak_rss, rss)
        return results

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> "FuzzWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run_batch(worker: FuzzWorker, pending: list[tuple[str, bytes]], batch_timeout: float) -> list[tuple[str, str, float, bytes]]:
    """(crafter, outcome, seconds, data) per case of one batch; a crash or hang is attributed by re-running one by one."""
    results = worker.decode([d for _, d in pending], batch_timeout)
    if results is not None:
        return [(name, outcome, seconds, data) for (name, data), (outcome, seconds) in zip(pending, results)]
    rows = []
    for name, data in pending:
        single = worker.decode([data], batch_timeout / max(len(pending), 1) + 30)
        rows.append((name, worker.last_failure, batch_timeout, data) if single is None else (name, *single[0], data))
    return rows


def run_fuzz(
    checkpoint: str | Path,
    cases: Iterator[tuple[str, bytes]],
    batch: int = 100,
    batch_timeout: float = 300.0,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> FuzzReport:
    """Decode ``cases`` in ``workers`` isolated :class:`FuzzWorker` processes and count the outcomes.

    Batches go to whichever worker is free (the counts do not depend on ``workers``). A batch whose worker dies
    or runs past ``batch_timeout`` is re-run case by case in fresh workers, so each crash or hang is attributed
    to one case (kept in ``report.failures``).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    report = FuzzReport()
    started = time.perf_counter()

    def record(rows: list[tuple[str, str, float, bytes]]) -> None:
        for name, outcome, seconds, data in rows:
            key = ":".join(outcome.split(":")[:2]) if outcome.startswith("bug:") else outcome  # bug:<Type>
            report.outcomes[name][key] += 1
            report.worst_seconds[name] = max(report.worst_seconds[name], seconds)
            report.total_seconds[name] += seconds
            if outcome in ("crash", "hang") or outcome.startswith("bug:"):
                report.failures.append((name, outcome, data))
        if progress:
            progress(len(rows))

    idle: queue.Queue[FuzzWorker] = queue.Queue()
    pool = [FuzzWorker(checkpoint, threads) for _ in range(workers)]
    for worker in pool:
        idle.put(worker)

    def job(pending: list[tuple[str, bytes]]) -> list[tuple[str, str, float, bytes]]:
        worker = idle.get()
        try:
            return _run_batch(worker, pending, batch_timeout)
        finally:
            idle.put(worker)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as threads_pool:
            running: collections.deque = collections.deque()
            iterator = iter(cases)
            while pending := list(itertools.islice(iterator, batch)):
                running.append(threads_pool.submit(job, pending))
                while len(running) >= 2 * workers:  # bounded look-ahead: cases are crafted lazily
                    record(running.popleft().result())
            while running:
                record(running.popleft().result())
    finally:
        for worker in pool:
            worker.close()
    report.peak_rss = max(worker.peak_rss for worker in pool)
    report.seconds = time.perf_counter() - started
    return report
