"""Argument handling for ``cotam serve`` and ``cotam chat --server URL`` (the work is in launch.py and client.py).

The ``cotam`` CLI (:mod:`cotam_llava.cli.serve`, :mod:`cotam_llava.cli.chat`) registers ``add_serve_parser`` →
``run_serve`` and adds ``add_server_argument`` to ``cotam chat``, which calls ``chat_via_server`` when
``--server`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_serve_parser", "run_serve", "add_server_argument", "chat_via_server"]


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to an ``argparse`` subparsers object; the parser's default ``func`` is :func:`run_serve`."""
    p = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible server taking .cotam bitstreams (vLLM runs the host's language model)",
        description="Serve a CoTAM LLaVA, LLaVA-OneVision or InternVL model: chat requests may carry .cotam bitstreams as "
                    "image parts (data:application/x-cotam;base64,...), and on LLaVA-OneVision as video parts "
                    "(video_url). This process decodes them and runs the vision tower, "
                    "adapter and projector; vLLM (a child process) runs the language model on the image embeddings. "
                    "vLLM engine arguments go after `--`, e.g. `cotam serve --model M -- --tensor-parallel-size 4`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="CoTAM model folder (or a stock LLaVA / LLaVA-OneVision / InternVL folder with --cotam)")
    p.add_argument("--cotam", default=None, help="codec folder (with a stock host; replaces a CoTAM folder's codec/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="model name clients send (default: the folder's name)")
    p.add_argument("--backend-url", default=None,
                   help="use an already running vLLM OpenAI server (started with --enable-mm-embeds on the exported "
                        "folder) instead of starting one")
    p.add_argument("--backend-port", type=int, default=0, help="loopback port of the vLLM child (0: a free one)")
    p.add_argument("--vllm-python", default=None,
                   help="Python that has vLLM (default: $COTAM_VLLM_PYTHON, else ./.venv-serve/bin/python, else this one)")
    p.add_argument("--export-dir", default=None,
                   help="where the stock host folder for vLLM is written (default: $COTAM_SERVE_CACHE or ~/.cache/cotam/vllm)")
    p.add_argument("--device", default=None, help="device of the CoTAM tower (cpu, cuda, cuda:1; default: cuda if any)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="host dtype for both sides (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=None,
                   help="the vLLM CPU recipe (VLLM_TARGET_DEVICE=cpu, KV cache in GiB, gpu_memory_utilization 0.2); "
                        "default: on when no CUDA device is visible")
    p.add_argument("--cpu-kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE (GiB) for the CPU recipe")
    p.add_argument("--engine-nice", type=int, default=None, metavar="N",
                   help="niceness of the vLLM child (default: 10 with the CPU recipe, so its busy-polling worker "
                        "yields the cores to decoding; 0 otherwise)")
    p.add_argument("--max-bitstream-bytes", type=int, default=None, help="largest .cotam part (default 4 MiB)")
    p.add_argument("--max-images", type=int, default=None, help="most .cotam parts per request (default 8)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest original or canvas area of a coded image (default: the container's 3840×2160)")
    p.add_argument("--max-video-frames", type=int, default=None,
                   help="most frames of a .cotam video part (LLaVA-OneVision hosts; default 32)")
    p.add_argument("--max-batch", type=int, default=8, help="most images in one batched tower pass")
    p.add_argument("--max-queue", type=int, default=64, help="most images waiting for the tower (then 503)")
    p.add_argument("--tower-threads", type=int, default=None, help="torch threads of the tower worker")
    p.add_argument("--startup-timeout", type=float, default=900.0, help="seconds vLLM may take to become healthy")
    p.add_argument("--vllm-log", default=None, help="file for vLLM's output (default: this process's stderr)")
    p.add_argument("--pid-file", default=None, help="write this server's PID here once it listens")
    p.add_argument("--export-only", action="store_true",
                   help="write the stock host folder vLLM loads, print its path and exit (for a vLLM you start "
                        "yourself, e.g. across nodes; then --backend-url)")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="`--` then vLLM engine arguments")
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    """``cotam serve``: :func:`~cotam_llava.serving.launch.serve` with the parsed arguments (or ``--export-only``).

    Returns:
        0 after a clean stop; the vLLM child is stopped in every case.
    """
    from .launch import export_only, serve

    extra = list(args.vllm_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    if args.export_only:
        print(export_only(args.model, args.export_dir))
        return 0
    serve(args.model, cotam=args.cotam, host=args.host, port=args.port, served_model_name=args.served_model_name,
          backend_url=args.backend_url, backend_port=args.backend_port, vllm_python=args.vllm_python,
          export_dir=args.export_dir, device=args.device, dtype=args.dtype, cpu=args.cpu,
          cpu_kv_cache_gib=args.cpu_kv_cache_gib, engine_nice=args.engine_nice,
          max_bitstream_bytes=args.max_bitstream_bytes,
          max_images=args.max_images, max_pixels=args.max_pixels,
          max_video_frames=args.max_video_frames, max_batch=args.max_batch, max_queue=args.max_queue,
          tower_threads=args.tower_threads, startup_timeout=args.startup_timeout, vllm_log=args.vllm_log,
          pid_file=args.pid_file, vllm_args=extra)
    return 0


# --------------------------------------------------------------------------- the edge client
def add_server_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--server URL`` (and what goes with it) to ``cotam chat``'s parser."""
    parser.add_argument("--server", default=None, metavar="URL",
                        help="send the question and the .cotam bitstream to a `cotam serve` server at URL "
                             "(http://host:port) instead of running the model here; the edge encodes with the "
                             "model's own settings (--model: its folder, for the codec and processor)")
    parser.add_argument("--served-model-name", default=None, help="model name the server serves (default: its first)")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token, if the server wants one")
    parser.add_argument("--json", action="store_true", help="with --server: print the whole result as JSON")


def chat_via_server(args: argparse.Namespace) -> int:
    """``cotam chat --server URL INPUT QUESTION``: encode on the edge (unless INPUT is a ``.cotam`` file), post, print.

    Reads ``args.server``, ``args.input``, ``args.question``, ``args.model``, ``args.cotam`` (optional),
    ``args.quality``, ``args.max_new_tokens``, ``args.served_model_name``, ``args.api_key``; prints the answer
    and a ``bits / bpp`` line to stderr (or everything as JSON with ``args.json``).
    """
    from ..errors import ConfigError
    from .client import chat_image, load_edge

    if not getattr(args, "server", None):
        raise ConfigError("chat_via_server needs --server URL")
    edge = None
    if not str(args.input).lower().endswith(".cotam"):
        if not getattr(args, "model", None):
            raise ConfigError("--model FOLDER is needed to encode an image on the edge (or pass a .cotam file)")
        edge = load_edge(args.model, getattr(args, "cotam", None))
    result = chat_image(args.server, args.input, args.question, edge=edge, quality=getattr(args, "quality", None),
                        model=getattr(args, "served_model_name", None),
                        max_tokens=getattr(args, "max_new_tokens", 64), api_key=getattr(args, "api_key", None))
    if getattr(args, "json", False):
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.answer)
        bpp = f"{result.bpp:.4f} bpp" if result.bpp is not None else f"{result.bpp_coded:.4f} bpp (coded picture)"
        print(f"[{result.bits} bits, {bpp}, quality {result.quality}, decode {result.decode_ms:.1f} ms on the server]",
              file=sys.stderr)
    return 0
