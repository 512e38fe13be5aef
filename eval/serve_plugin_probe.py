"""The route `cotam serve` did not take, measured: a vLLM plugin model that decodes `.cotam` bitstreams inside vLLM's
worker, against the shipped embedding route (`eval/serve_load.py`), same model, photos, clients and machine.

::

    plugin route:  client ─image_embeds part = the container's bytes packed in a float tensor (n_tokens, hidden)─▶
                   vLLM (--enable-mm-embeds) ─▶ CoTAMLlavaInWorker (vLLM's LlavaForConditionalGeneration, registered
                   through the vllm.general_plugins entry point): in embed_multimodal, i.e. inside the engine's step,
                   unpack ─▶ codec decode (cotam_llava.codec, the same numba rANS + synthesis) ─▶ x̂ resized and
                   normalised for CLIP (torch) ─▶ vLLM's own CLIP + projector ─▶ the language model
    embedding route (shipped): decoding, tower and projector in the cotam serve process, embeddings to vLLM

Measured on the 2-core development CPU (2026-12-02, the training job paused): 3.26 / 4.13 good requests/s at 1 / 4
clients against the embedding route's 1.85 / 2.10 (2.17 / 2.39 with the engine niced), while a concurrent text
stream's inter-token gap p99 rose to 365–879 ms (embedding route: 15–27 ms). Tables and the reading of them:
docs/serving.md, "Why embeddings and not a plugin model inside vLLM"; results in
eval/results/serve_load/route_comparison/. (An earlier attempt waited forever: vLLM's /health answers 200 with an
empty body, which serve_load's JSON reader took for "not up"; fixed there.)

The plugin skips the adapter: the measured model's adapter is untrained (zero output projection), so it adds
nothing but one small block of compute; the plugin's answers are not compared, only its speed. It needs the codec's
Python dependencies inside vLLM's interpreter: they are installed with ``pip --target`` into a scratch folder
(compressai, pytorch-msssim, torch-geometric, xxhash, pandas, python-dateutil, pytz, tzdata, scipy, pyparsing;
``--no-deps``), never into .venv-serve, with the plugin module and a ``.dist-info`` holding its entry point.

    python eval/serve_plugin_probe.py --model /tmp/serve-load-model/cotam --clients 1 4 --seconds 30 \\
        --out eval/results/serve_load/plugin_route
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load  # noqa: E402  (this folder's load test: photos, client loop, percentiles, table)

REPO = Path(__file__).resolve().parents[1]
DEPS = ["compressai==1.2.8", "pytorch-msssim==1.0.0", "torch-geometric==2.8.1", "xxhash", "pandas", "python-dateutil",
        "pytz", "tzdata", "scipy", "pyparsing"]

PLUGIN = '''
"""CoTAM decoding inside vLLM's worker (eval/serve_plugin_probe.py)."""
import os

import torch
import torch.nn.functional as F


def register():
    from vllm import ModelRegistry

    if "CoTAMLlavaInWorker" not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model("CoTAMLlavaInWorker", "vllm_cotam_probe:CoTAMLlavaInWorker")


from vllm.model_executor.models.llava import LlavaForConditionalGeneration, LlavaImageEmbeddingInputs  # noqa: E402

_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


class CoTAMLlavaInWorker(LlavaForConditionalGeneration):
    def __init__(self, *, vllm_config, prefix=""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        from cotam_llava.codec.model import CoTAMELIC

        # not a submodule: vLLM's loader would look for its weights in the host checkpoint
        self.__dict__["_codec"] = CoTAMELIC.from_pretrained(os.environ["COTAM_PLUGIN_CODEC"]).eval()
        self._side = int(self.config.vision_config.image_size)

    def _decode(self, packed):
        from cotam_llava.codec.container import parse
        from cotam_llava.codec.pipeline import decode_container

        flat = packed.reshape(-1)
        n = int(flat[0].item())
        data = bytes(flat[1:1 + n].round().to(torch.uint8).tolist())
        with torch.no_grad():
            [dec] = decode_container(self._codec, parse(data))
        x = dec.picture.float()
        x = x[None] if x.dim() == 3 else x
        x = x / 255.0 if x.max() > 1.5 else x
        x = F.interpolate(x, size=(self._side, self._side), mode="bicubic", antialias=True, align_corners=False)
        return ((x.clamp(0, 1) - _MEAN) / _STD).to(next(self.vision_tower.parameters()).dtype)

    def _process_image_input(self, image_input):
        if not isinstance(image_input, LlavaImageEmbeddingInputs):
            return super()._process_image_input(image_input)
        data = image_input["data"]
        items = list(data) if isinstance(data, (list, tuple)) or data.dim() == 3 else [data]
        pixels = torch.cat([self._decode(item) for item in items])
        feats = self._image_pixels_to_features(self.vision_tower, pixels)
        return list(self.multi_modal_projector(feats))
'''


def pack(data: bytes, n_tokens: int, hidden: int):
    """The container's bytes as a float32 (n_tokens, hidden) tensor: [length, byte, byte, ...] (exact in float32)."""
    import torch

    if len(data) + 1 > n_tokens * hidden:
        raise ValueError(f"{len(data)} bytes do not fit {n_tokens}×{hidden}")
    flat = torch.zeros(n_tokens * hidden, dtype=torch.float32)
    flat[0] = len(data)
    flat[1:1 + len(data)] = torch.tensor(list(data), dtype=torch.float32)
    return flat.reshape(n_tokens, hidden)


def prepare(scratch: Path, model: Path) -> tuple[Path, Path]:
    """(PYTHONPATH folder with the codec's deps, the plugin and its entry point; the vLLM model folder)."""
    from cotam_llava.serving.export import export_for_vllm

    site = scratch / "site"
    python = REPO / ".venv-serve" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), *DEPS], check=True)
    (site / "vllm_cotam_probe.py").write_text(PLUGIN)
    info = site / "vllm_cotam_probe-0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cotam-probe\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[vllm.general_plugins]\ncotam_probe = vllm_cotam_probe:register\n")
    folder = scratch / "vllm-model"
    export_for_vllm(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["CoTAMLlavaInWorker"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return site, folder


def start(site: Path, folder: Path, codec: Path, port: int, log: Path):
    """vLLM with the plugin, started (not yet healthy): the project's VLLMBackend, at the engine's default niceness."""
    from cotam_llava.serving.backend import VLLMBackend, vllm_command, vllm_env

    env = vllm_env(True, 1)
    env["PYTHONPATH"] = f"{site}{os.pathsep}{REPO}"
    env["COTAM_PLUGIN_CODEC"] = str(codec)
    cmd = vllm_command(str(REPO / ".venv-serve" / "bin" / "python"), str(folder), port, "load", "float32", cpu=True,
                       extra_args=["--max-model-len", "1024", "--max-num-seqs", "16", "--limit-mm-per-prompt",
                                   '{"image":1}'])
    return VLLMBackend(cmd, env, port, log).start()


def client(url: str, bodies: list[bytes], deadline: float, seed: int, rec: serve_load.Recorder) -> None:
    import random

    rng = random.Random(seed)
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{url}/v1/chat/completions", data=rng.choice(bodies),
                                     headers={"Content-Type": "application/json"})
        start_t = time.perf_counter()
        row = {"kind": "good", "expect": 200}
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                json.loads(r.read())
                row["status"] = r.status
        except urllib.error.HTTPError as exc:
            row["status"] = exc.code
            row["message"] = exc.read()[:200].decode("utf-8", "replace")
        except OSError as exc:
            row["status"] = 0
            row["message"] = str(exc)[:200]
        row["ms"] = 1e3 * (time.perf_counter() - start_t)
        rec.add(row)


def run(url: str, bodies: list[bytes], clients: int, seconds: float, stream_probe: bool = True) -> dict:
    rec = serve_load.Recorder()
    streams: dict = {}
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(url, bodies, deadline, i, rec)) for i in range(clients)]
    if stream_probe:
        threads.append(threading.Thread(target=serve_load.stream_probe, args=(url, "load", deadline, streams)))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ok = [r for r in rec.rows if r["status"] == 200]
    gaps = streams.get("gaps", [])
    return {"clients": clients, "seconds": seconds, "requests": len(rec.rows), "good_per_s": len(ok) / wall,
            "good_p50_ms": serve_load.pct([r["ms"] for r in ok], 50), "good_p99_ms": serve_load.pct([r["ms"] for r in ok], 99),
            "stream_gap_p99_ms": serve_load.pct(gaps, 99), "stream_gap_max_ms": max(gaps) if gaps else None,
            "failed": len(rec.rows) - len(ok), "failures": [r for r in rec.rows if r["status"] != 200][:3]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", type=Path, required=True, help="CoTAM folder (e.g. serve_load.py --build's DIR/cotam)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--stream-probe", action=argparse.BooleanOptionalAction, default=True,
                   help="one more client streams text-only chats all along (the engine's inter-token gaps)")
    args = p.parse_args(argv)

    from cotam_llava.serving.backend import free_port
    from cotam_llava.serving.client import encode_image, load_edge

    config = json.loads((args.model / "config.json").read_text())
    hidden = int(config["text_config"]["hidden_size"])
    n_tokens = int(config.get("image_seq_length", 576))
    edge = load_edge(args.model)
    streams = [encode_image(edge, pic) for pic in serve_load.photos(args.photos)]
    import base64
    import io

    import torch

    bodies = []
    for s in streams:
        buf = io.BytesIO()
        torch.save(pack(s, n_tokens, hidden), buf)
        part = {"type": "image_embeds", "image_embeds": base64.b64encode(buf.getvalue()).decode()}
        bodies.append(json.dumps({"model": "load", "max_tokens": args.max_tokens, "temperature": 0.0,
                                  "messages": [{"role": "user", "content": [part, {"type": "text", "text": "what is this ?"}]}]}
                                 ).encode())
    scratch = Path(tempfile.mkdtemp(prefix="cotam-plugin-"))
    backend = None
    try:
        site, folder = prepare(scratch, args.model)
        backend = start(site, folder, args.model / "codec", free_port(), scratch / "vllm.log")
        backend.wait_ready(900)
        url = backend.url
        run(url, bodies[:1], 1, 1.0)  # warm-up
        results = [run(url, bodies, n, args.seconds, args.stream_probe) for n in args.clients]
    finally:
        if backend is not None:  # also on Ctrl-C while vLLM starts: never leave its process group behind
            backend.stop(60)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    lines = ["| route | clients | s | requests | good req/s | good p50 / p99 ms | text stream gap p99 / max ms | failed |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| plugin (decode in vLLM's worker) | {r['clients']} | {r['seconds']:.0f} | {r['requests']} "
                     f"| {r['good_per_s']:.2f} | {serve_load._fmt(r['good_p50_ms'])} / {serve_load._fmt(r['good_p99_ms'])} "
                     f"| {serve_load._fmt(r['stream_gap_p99_ms'])} / {serve_load._fmt(r['stream_gap_max_ms'])} | {r['failed']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"results": results, "photos": len(streams),
                                                             "mean_bytes": statistics.fmean(len(s) for s in streams)},
                                                            indent=2) + "\n")
    return 0 if all(r["failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
