"""Bounded load test of ``cotam serve`` on 127.0.0.1: N concurrent edge clients for T seconds, a share of them hostile.

::

    (--model FOLDER, or --build DIR: a random LLaVA at CLIP-L's 336-px geometry — CLIP hidden 256 × 4 layers,
     Llama hidden 256 × 2 layers — with the shipped elic-small codec, so decoding costs what it costs at 384²)
      ─start `python -m cotam_llava serve` (vLLM child on loopback), or use --server URL─▶
    K photos (Kodak centre squares, else synthetic) ─edge encode once (load_edge: the model's settings)─▶ .cotam
    N client threads × T seconds: each request is good (a photo's bitstream) or, with probability --bad-share,
    hostile (truncated, bit-flipped, garbage, another codec's, an oversized size claim, over the byte limit)
      ─POST /v1/chat/completions (greedy, --max-tokens)─▶ status, latency, the server's decode_ms / vision_ms

Reported (markdown table + JSON under --out): requests/s (all, good), p50 / p99 latency of good and of hostile
requests, the decode share (server decode_ms / client latency, mean over good requests) and the vision share
(decode + tower + projector), and the failures: good requests not answered 200, hostile ones not answered 4xx,
requests lost (no answer), whether the server was healthy and its PID alive at the end. Requests still in flight
at T are waited for (not counted as lost) and included. With --stream-probe (default) one more client streams
text-only chats all along and the table gives the engine's inter-token gaps under the image load; the first row
(0 clients) is that probe alone, the engine's gaps without image load.

    python eval/serve_load.py --build /tmp/serve-load-model --clients 1 4 8 --seconds 30 --bad-share 0.2
    python eval/serve_load.py --server http://127.0.0.1:8000 --model FOLDER --clients 4 --seconds 20
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"
QUESTION = "what is this ?"
WORDS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "USER:", "ASSISTANT:", "what", "is", "this", "?"] + \
        [f"w{i}" for i in range(117)]
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}{% if c['type']=='image' %}<image> "
    "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


# --------------------------------------------------------------------------- the model
def build_model(folder: Path, codec: str | None = None, seed: int = 0) -> Path:
    """A random LLaVA at the 336-px / 14-px-patch geometry (24×24 grid, 384² canvas) with a codec, saved as a CoTAM
    folder. Heads are 64 wide (vLLM's CPU attention takes 32, 64, 80, ...)."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    from cotam_llava.codec.model import CoTAMELIC
    from cotam_llava.models import CoTAMProcessor, cotam_class_for
    from cotam_llava.shipped import default_codec

    if (folder / "cotam" / "config.json").is_file():
        return folder / "cotam"
    torch.manual_seed(seed)
    vision = dict(model_type="clip_vision_model", hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                  num_attention_heads=4, image_size=336, patch_size=14)
    text = dict(model_type="llama", hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, vocab_size=len(WORDS), max_position_embeddings=2048)
    cfg = tf.LlavaConfig(vision_config=vision, text_config=text, image_token_index=WORDS.index("<image>"),
                         image_seq_length=576)
    host = tf.LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # an LM whose greedy answers vary (at init it is near uniform)
        for p in [*host.model.language_model.parameters(), *host.lm_head.parameters()]:
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    host.save_pretrained(folder / "host")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                           pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    ip = tf.CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    proc = tf.LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=14, num_additional_image_tokens=1,
                             vision_feature_select_strategy="default", chat_template=TEMPLATE)
    codec_model = CoTAMELIC.from_pretrained(codec or default_codec())
    model = cotam_class_for("llava").from_host_pretrained(folder / "host", codec_model, image_processor=ip)
    model.save_pretrained(folder / "cotam")
    CoTAMProcessor(proc, model.vision_tower.cotam_config, model.codec).save_pretrained(folder / "cotam")
    return folder / "cotam"


# --------------------------------------------------------------------------- the server
def _get(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            return r.status, json.loads(body) if body.strip() else {}  # vLLM's own /health answers 200 with no body
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def start_server(model: Path, port: int, log: Path, vllm_args: list[str], timeout: float = 900.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cotam_llava", "serve", "--model", str(model), "--port", str(port),
           "--served-model-name", "load", "--pid-file", str(log.with_suffix(".pid")), "--", *vllm_args]
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cotam serve exited ({proc.returncode}); see {log}")
        if _get(f"http://127.0.0.1:{port}/health")[0] == 200:
            return proc
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    raise SystemExit(f"cotam serve not healthy within {timeout:.0f} s; see {log}")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


# --------------------------------------------------------------------------- requests
def photos(k: int, side: int = 384) -> list:
    """k Kodak photos (or deterministic synthetic pictures when Kodak is absent), as PIL images."""
    import numpy as np
    from PIL import Image

    files = sorted(KODAK.glob("*.png"))[:k] if KODAK.is_dir() else []
    if files:
        return [Image.open(f).convert("RGB") for f in files]
    out = []
    for i in range(k):
        yy, xx = np.mgrid[0:side, 0:side]
        out.append(Image.fromarray(np.stack([(xx * (i + 1)) % 256, (yy * 3 + i * 40) % 256, (xx ^ yy) % 256],
                                            -1).astype(np.uint8)))
    return out


def hostile_streams(good: bytes, foreign: bytes, max_bytes: int) -> dict[str, tuple[bytes, int]]:
    """name → (bytes, the status a correct server answers)."""
    import dataclasses

    from cotam_llava.codec.container import ResizeMode, parse, serialize

    c = parse(good)
    claim = serialize(dataclasses.replace(c, items=[dataclasses.replace(
        c.items[0], orig_size=(60000, 60000), canvas_size=(60000, 60000), resize_mode=ResizeMode.RESIZE)]))
    rng = random.Random(7)
    return {
        "truncated": (good[: len(good) // 2], 400),
        "bit-flip": (good[:-9] + bytes([good[-9] ^ 0x10]) + good[-8:], 400),
        "garbage": (b"\x89CTM" + bytes(rng.getrandbits(8) for _ in range(300)), 400),
        "other codec": (foreign, 422),
        "size claim": (claim, 413),
        "too many bytes": (good + bytes(max_bytes), 413),
    }


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.lock = threading.Lock()

    def add(self, row: dict) -> None:
        with self.lock:
            self.rows.append(row)


def client(url: str, model: str, good: list[bytes], bad: list[tuple[str, bytes, int]], deadline: float,
           bad_share: float, max_tokens: int, seed: int, rec: Recorder) -> None:
    from cotam_llava.serving.client import chat_request

    rng = random.Random(seed)
    while time.monotonic() < deadline:
        if rng.random() < bad_share:
            name, data, expect = rng.choice(bad)
        else:
            name, data, expect = "good", rng.choice(good), 200
        body = json.dumps(chat_request(data, QUESTION, model, max_tokens)).encode()
        req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        row = {"kind": name, "expect": expect}
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                out = json.loads(r.read())
                row["status"] = r.status
                info = out.get("cotam") or {}
                row["decode_ms"] = info.get("decode_ms")
                row["vision_ms"] = info.get("vision_ms")
                row["tokens"] = len(out["choices"][0].get("token_ids") or [])
        except urllib.error.HTTPError as exc:
            row["status"] = exc.code
            try:
                row["message"] = json.loads(exc.read())["error"]["message"][:200]
            except (ValueError, KeyError, TypeError):
                row["message"] = "(no JSON error body)"
        except (OSError, ValueError) as exc:
            row["status"] = 0
            row["message"] = f"{type(exc).__name__}: {exc}"[:200]
        row["ms"] = 1e3 * (time.perf_counter() - start)
        rec.add(row)


def stream_probe(url: str, model: str, deadline: float, out: dict) -> None:
    """Text-only streaming chats, back to back until ``deadline``: the engine's inter-token gaps while images are
    decoded next to it (with decoding inside the engine's step, every decode would stall every stream)."""
    gaps, ttfts = [], []
    while time.monotonic() < deadline:
        body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16,
                "temperature": 0.0, "stream": True, "ignore_eos": True}
        req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        start = last = time.perf_counter()
        first = True
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                for line in r:
                    if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                        continue
                    now = time.perf_counter()
                    if first:
                        ttfts.append(1e3 * (now - start))
                        first = False
                    else:
                        gaps.append(1e3 * (now - last))
                    last = now
        except (OSError, ValueError):
            out["errors"] = out.get("errors", 0) + 1
    out.update(gaps=gaps, ttfts=ttfts)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def run(url: str, model: str, good: list[bytes], bad: dict, clients: int, seconds: float, bad_share: float,
        max_tokens: int, seed: int = 0, probe: bool = False) -> dict:
    rec = Recorder()
    deadline = time.monotonic() + seconds
    bad_list = [(k, v[0], v[1]) for k, v in bad.items()]
    threads = [threading.Thread(target=client, args=(url, model, good, bad_list, deadline, bad_share, max_tokens,
                                                     seed * 1000 + i, rec)) for i in range(clients)]
    streams: dict = {}
    if probe:
        threads.append(threading.Thread(target=stream_probe, args=(url, model, deadline, streams)))
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    rows = rec.rows
    ok = [r for r in rows if r["kind"] == "good" and r["status"] == 200]
    bad_rows = [r for r in rows if r["kind"] != "good"]
    shares = [r["decode_ms"] / r["ms"] for r in ok if r.get("decode_ms") is not None]
    vshares = [r["vision_ms"] / r["ms"] for r in ok if r.get("vision_ms") is not None]
    return {
        "clients": clients, "seconds": seconds, "wall_s": wall, "requests": len(rows),
        "good": sum(r["kind"] == "good" for r in rows), "hostile": len(bad_rows),
        "req_per_s": len(rows) / wall, "good_per_s": len(ok) / wall,
        "good_p50_ms": pct([r["ms"] for r in ok], 50), "good_p99_ms": pct([r["ms"] for r in ok], 99),
        "hostile_p50_ms": pct([r["ms"] for r in bad_rows], 50), "hostile_p99_ms": pct([r["ms"] for r in bad_rows], 99),
        "decode_ms_mean": statistics.fmean([r["decode_ms"] for r in ok]) if ok else None,
        "decode_share": statistics.fmean(shares) if shares else None,
        "vision_share": statistics.fmean(vshares) if vshares else None,
        "good_failed": sum(r["kind"] == "good" and r["status"] != 200 for r in rows),
        "hostile_wrong": sum(r["status"] != r["expect"] for r in bad_rows),
        "hostile_not_4xx": sum(not 400 <= r["status"] < 500 for r in bad_rows),
        "lost": sum(r["status"] == 0 for r in rows),
        "stream_gap_p50_ms": pct(streams.get("gaps", []), 50), "stream_gap_p99_ms": pct(streams.get("gaps", []), 99),
        "stream_gap_max_ms": max(streams["gaps"]) if streams.get("gaps") else None,
        "stream_ttft_p50_ms": pct(streams.get("ttfts", []), 50), "stream_errors": streams.get("errors", 0),
        "examples": {k: next((r.get("message") for r in bad_rows if r["kind"] == k), None) for k in bad},
        "failures": [r for r in rows if r["status"] != r["expect"]][:5],
    }


def _fmt(v, spec=".0f"):
    return "–" if v is None else format(v, spec)


def table(results: list[dict]) -> str:
    head = ("| clients | s | requests (good / hostile) | req/s | good req/s | good p50 / p99 ms | hostile p50 / p99 ms "
            "| decode ms (mean) | decode share | vision share | text stream gap p50 / p99 / max ms "
            "| good ≠ 200 | hostile ≠ 4xx | lost |\n|" + "---|" * 14)
    lines = [head]
    for r in results:
        lines.append(
            f"| {r['clients']} | {r['seconds']:.0f} | {r['requests']} ({r['good']} / {r['hostile']}) | {r['req_per_s']:.2f} "
            f"| {r['good_per_s']:.2f} | {_fmt(r['good_p50_ms'])} / {_fmt(r['good_p99_ms'])} "
            f"| {_fmt(r['hostile_p50_ms'])} / {_fmt(r['hostile_p99_ms'])} | {_fmt(r['decode_ms_mean'])} "
            f"| {_fmt(r['decode_share'], '.1%')} | {_fmt(r['vision_share'], '.1%')} "
            f"| {_fmt(r.get('stream_gap_p50_ms'))} / {_fmt(r.get('stream_gap_p99_ms'))} / {_fmt(r.get('stream_gap_max_ms'))} "
            f"| {r['good_failed']} | {r['hostile_not_4xx']} | {r['lost']} |")
    return "\n".join(lines)


def render(report: dict) -> str:
    """The markdown report of a run (from its JSON)."""
    results = report["results"]
    examples: dict = {}
    for r in results:
        for k, v in r["examples"].items():
            examples[k] = examples.get(k) or v
    model = Path(report["model"])
    md = [f"`cotam serve` load test, {report['date']}, {report['cpus']} CPUs; model {model.parent.name}/{model.name} "
          f"({report['photos']} photos, mean {report['bpp_mean']:.3f} bpp, {report['bytes_mean']:.0f} bytes; edge encode "
          f"{report['edge_encode_s']:.2f} s each), {report['bad_share']:.0%} hostile requests, {report['max_tokens']} "
          "tokens greedy. Row 0: the text-stream probe alone.", "", table(results), "",
          f"Server healthy at the end: {report['healthy_at_end']}; alive: {report['server_alive_at_end']}; stopped "
          f"with status {report['server_exit']}.",
          "Hostile kinds and the server's answers: " + "; ".join(f"{k}: {v!r}" for k, v in examples.items())]
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", type=Path, default=None, help="CoTAM model folder (its edge settings encode the photos)")
    p.add_argument("--build", type=Path, default=None, help="build (or reuse) the random 336-px LLaVA here")
    p.add_argument("--cotam", default=None, help="codec for --build (default: the shipped elic-small)")
    p.add_argument("--server", default=None, help="an already running cotam serve (default: start one)")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--bad-share", type=float, default=0.2)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--quality", type=int, default=None)
    p.add_argument("--max-bitstream-bytes", type=int, default=4 * 1024 * 1024,
                   help="the server's limit (for the over-the-limit request)")
    p.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.json")
    p.add_argument("--stream-probe", action=argparse.BooleanOptionalAction, default=True,
                   help="one more client streaming text-only chats: inter-token gaps under the image load")
    p.add_argument("--vllm-args", default="--max-model-len 1024 --max-num-seqs 16 --limit-mm-per-prompt {\"image\":1}",
                   help="vLLM engine arguments for a server started here")
    p.add_argument("--render", type=Path, default=None, help="only re-render <out>.md from this saved JSON")
    args = p.parse_args(argv)
    if args.render is not None:
        text = render(json.loads(args.render.read_text()))
        print(text)
        args.render.with_suffix(".md").write_text(text)
        return 0
    if not 0 <= args.bad_share <= 1 or args.seconds <= 0 or min(args.clients) < 1:
        p.error("need 0 <= --bad-share <= 1, --seconds > 0, --clients >= 1")
    if args.model is None and args.build is None:
        p.error("pass --model FOLDER or --build DIR")
    model = args.model if args.model is not None else build_model(args.build, args.cotam)

    from cotam_llava.codec.pipeline import encode
    from cotam_llava.serving.backend import free_port
    from cotam_llava.serving.client import encode_image, load_edge, served_models

    edge = load_edge(model)
    t0 = time.perf_counter()
    pics = photos(args.photos)
    good = [encode_image(edge, pic, args.quality) for pic in pics]
    encode_s = (time.perf_counter() - t0) / len(good)
    from cotam_llava.codec.model import CoTAMELIC

    foreign_codec = CoTAMELIC.from_preset("tiny", seed=5)
    foreign_codec.finalize()
    bad = hostile_streams(good[0], encode(foreign_codec, pics[0].resize((64, 64)), canvas=64), args.max_bitstream_bytes)
    bpp = statistics.fmean(8 * len(g) / (pic.width * pic.height) for g, pic in zip(good, pics))

    proc = None
    import tempfile

    log = Path(tempfile.gettempdir()) / f"{(args.out or Path('serve_load')).name}.server.log"  # not under eval/results
    if args.server is None:
        port = args.port or free_port()
        proc = start_server(model, port, log, args.vllm_args.split())
        url = f"http://127.0.0.1:{port}"
    else:
        url = args.server.rstrip("/")
    try:
        name = args.served_model_name or served_models(url)[0]
        run(url, name, good[:1], {}, 1, 1.0, 0.0, args.max_tokens)  # warm-up (JIT, caches): not reported
        results = []
        if args.stream_probe:  # the engine's gaps without image load (the baseline for the column)
            idle = run(url, name, good, bad, 0, min(args.seconds, 10.0), 0.0, args.max_tokens, probe=True)
            results.append(idle)
            print(table([idle]).splitlines()[-1], flush=True)
        for n in args.clients:
            res = run(url, name, good, bad, n, args.seconds, args.bad_share, args.max_tokens, seed=n,
                      probe=args.stream_probe)
            results.append(res)
            print(table([res]).splitlines()[-1], flush=True)
        status, health = _get(f"{url}/health", 10)
        pid_alive = proc.poll() is None if proc is not None else None
    finally:
        code = stop_server(proc) if proc is not None else None
    report = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(), "cpus": os.cpu_count(),
        "model": str(model), "photos": len(good), "bpp_mean": bpp, "edge_encode_s": encode_s,
        "bytes_mean": statistics.fmean(len(g) for g in good), "bad_share": args.bad_share,
        "max_tokens": args.max_tokens, "healthy_at_end": status == 200, "health": health,
        "server_alive_at_end": pid_alive, "server_exit": code, "results": results,
    }
    text = render(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    ok = report["healthy_at_end"] and all(r["good_failed"] == 0 and r["hostile_not_4xx"] == 0 and r["lost"] == 0
                                          and not r["stream_errors"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
