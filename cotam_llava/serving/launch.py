"""One ``cotam serve`` process: export the host for vLLM, start vLLM, load the CoTAM side, serve, stop.

::

    model folder ─export_for_vllm─▶ stock folder ─VLLMBackend.start (child process group, loopback)──┐
                 ─CoTAMEmbedder.from_pretrained (language model released) ─▶ EmbedBatcher            │ overlapped
    wait for vLLM /health ◀───────────────────────────────────────────────────────────────────────────┘
    aiohttp front on host:port until SIGINT / SIGTERM ─▶ batcher closed, vLLM's process group stopped
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError

__all__ = ["serve", "export_only"]

log = logging.getLogger("cotam_llava.serving")


def _local_folder(model: str | os.PathLike) -> Path:
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(f"cotam serve needs a local model folder; {model} is not one (download it first)")
    return path


def export_only(model: str | os.PathLike, export_dir: str | os.PathLike | None = None) -> Path:
    """Write (or reuse) the stock host folder vLLM loads and return its path (for a vLLM started elsewhere)."""
    from .export import export_for_vllm

    return export_for_vllm(_local_folder(model), export_dir)


def serve(
    model: str | os.PathLike,
    *,
    cotam: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str | None = None,
    backend_url: str | None = None,
    backend_port: int = 0,
    vllm_python: str | None = None,
    export_dir: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: str | None = None,
    cpu: bool | None = None,
    cpu_kv_cache_gib: int = 1,
    engine_nice: int | None = None,
    max_bitstream_bytes: int | None = None,
    max_images: int | None = None,
    max_pixels: int | None = None,
    max_video_frames: int | None = None,
    max_batch: int = 8,
    max_queue: int = 64,
    tower_threads: int | None = None,
    startup_timeout: float = 900.0,
    vllm_log: str | os.PathLike | None = None,
    pid_file: str | os.PathLike | None = None,
    vllm_args: Sequence[str] = (),
) -> None:
    """Serve ``model`` (a CoTAM LLaVA, LLaVA-OneVision or InternVL folder) until SIGINT / SIGTERM; see ``cotam serve --help`` for each argument.

    Raises:
        ConfigError: not a local folder, an unsupported host, vLLM missing or not starting, aiohttp missing.
        CheckpointError: the model or codec cannot be loaded.
    """
    import torch

    from ..codec.container import ParseLimits
    from .backend import CPU_ENGINE_NICE, VLLMBackend, default_vllm_python, free_port, vllm_command, vllm_env
    from .export import export_for_vllm
    from .requests import DEFAULT_MAX_BITSTREAM_BYTES, DEFAULT_MAX_IMAGES, DEFAULT_MAX_VIDEO_FRAMES
    from .server import ServerSettings, make_app
    from .vision import CoTAMEmbedder, EmbedBatcher

    try:
        from aiohttp import web
    except ImportError:  # pragma: no cover - the serve extra
        raise ConfigError("cotam serve needs aiohttp: pip install 'cotam-llava[serve]'") from None

    logging.basicConfig(level=logging.INFO, format="%(asctime)s cotam-serve %(levelname)s %(message)s")
    model_path = _local_folder(model)
    name = served_model_name or model_path.resolve().name
    cpu = cpu if cpu is not None else not torch.cuda.is_available()
    dtype = dtype or ("float32" if cpu else "bfloat16")

    backend = None
    if backend_url is None:
        vllm_dir = export_for_vllm(model_path, export_dir)
        log.info("vLLM folder: %s", vllm_dir)
        bport = backend_port or free_port()
        backend = VLLMBackend(vllm_command(vllm_python or default_vllm_python(), str(vllm_dir), bport, name, dtype, cpu,
                                           vllm_args),
                              vllm_env(cpu, cpu_kv_cache_gib), bport, Path(vllm_log) if vllm_log else None,
                              nice=engine_nice if engine_nice is not None else (CPU_ENGINE_NICE if cpu else 0))
        log.info("starting vLLM: %s", " ".join(backend.command))
        backend.start()
    batcher = None
    try:
        embedder = CoTAMEmbedder.from_pretrained(str(model_path), cotam, device=device, dtype=dtype)
        limits = ParseLimits(max_items=1, **({"max_pixels": max_pixels} if max_pixels else {}))
        batcher = EmbedBatcher(embedder, max_batch, max_queue, tower_threads)
        url = backend_url.rstrip("/") if backend_url else backend.url
        if backend is not None:
            backend.wait_ready(startup_timeout)
            log.info("vLLM ready at %s (pid %d)", backend.url, backend.pid)
        settings = ServerSettings(backend_url=url, max_bitstream_bytes=max_bitstream_bytes or DEFAULT_MAX_BITSTREAM_BYTES,
                                  max_images=max_images or DEFAULT_MAX_IMAGES, limits=limits,
                                  max_video_frames=max_video_frames or DEFAULT_MAX_VIDEO_FRAMES,
                                  backend_pid=backend.pid if backend is not None else None)
        app = make_app(embedder, settings, batcher)
        if pid_file:
            async def write_pid(_app: Any) -> None:
                Path(pid_file).write_text(f"{os.getpid()}\n")
            app.on_startup.append(write_pid)
        print(f"cotam serve: model {name!r} on http://{host}:{port}/v1 (vLLM at {url})", flush=True)
        web.run_app(app, host=host, port=port, print=None, handle_signals=True, access_log=None, shutdown_timeout=10.0)
    finally:
        if batcher is not None:
            batcher.close()
        if backend is not None:
            log.info("vLLM stopped (status %s)", backend.stop())
