"""CoTAMProcessor as a transformers ProcessorMixin: save/load, single inputs, pipeline, Auto classes on a bare import.

Tiny random LLaVA host (tests/tiny_hosts.py), the tiny untrained codec, kodim23 when present (else a synthetic
picture); every container is a real bitstream coded here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import tiny_hosts
from conftest import KODAK_DIR, REPO_ROOT, make_synthetic_image
from cotam_llava.errors import ImageInputError
from cotam_llava.models import CoTAMProcessor
from cotam_llava.codec.transport import unpack_bitstreams


def _picture() -> Image.Image:
    path = KODAK_DIR / "kodim23.png"
    if path.is_file():
        with Image.open(path) as img:
            return img.convert("RGB")
    return Image.fromarray(make_synthetic_image(96, 128))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder with the model and processor saved, model, processor, a picture and its PNG file)."""
    root = tmp_path_factory.mktemp("cotam_mixin")
    model, proc, _, _ = tiny_hosts.build_cotam("llava", root)
    folder = root / "cotam"
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    picture = _picture()
    png = root / "picture.png"
    picture.save(png)
    return folder, model, proc, picture, png


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_and_load_round_trip_as_a_processor_mixin(saved):
    from transformers import AutoProcessor
    from transformers.processing_utils import ProcessorMixin

    folder, model, proc, picture, _ = saved
    assert isinstance(proc, ProcessorMixin)
    for loaded in (CoTAMProcessor.from_pretrained(folder), AutoProcessor.from_pretrained(folder)):
        assert type(loaded) is CoTAMProcessor
        # host settings, image processor, CoTAM tower config (as JSON: tuples come back as lists)
        assert json.loads(loaded.to_json_string()) == json.loads(proc.to_json_string())
        assert loaded.chat_template == proc.chat_template
        assert loaded.tokenizer.get_vocab() == proc.tokenizer.get_vocab()
        assert loaded.edge.codec.codec_id == model.codec.codec_id
        prompt = tiny_hosts.chat_prompt(loaded)
        assert _equal(loaded(text=prompt, images=[picture], quality=5), proc(text=prompt, images=[picture], quality=5))
    saved_config = json.loads((folder / "processor_config.json").read_text())
    assert saved_config["processor_class"] == "CoTAMProcessor"
    assert json.loads(proc.to_json_string())["cotam"] == json.loads(json.dumps(proc.tower_config.to_dict()))


def test_a_single_image_a_path_bytes_or_a_cotam_file_is_accepted(saved, tmp_path):
    _, _, proc, picture, png = saved
    prompt = tiny_hosts.chat_prompt(proc)
    reference = proc(text=prompt, images=[picture], quality=5)
    [stream] = unpack_bitstreams(reference["pixel_values"])
    assert [r.encoded_here for r in proc.last_coded] == [True] and proc.last_coded[0].bits == 8 * len(stream)
    assert proc.last_coded[0].pixels == picture.width * picture.height

    cotam_file = tmp_path / "edge.cotam"
    cotam_file.write_bytes(stream)
    for single in (picture, png, str(png), png.read_bytes()):
        assert _equal(proc(text=prompt, images=single, quality=5), reference), type(single)
    for given in (stream, cotam_file, str(cotam_file), [cotam_file]):  # taken as they are, never re-encoded
        assert _equal(proc(text=prompt, images=given), reference), type(given)
        assert [r.encoded_here for r in proc.last_coded] == [False]
        assert _equal(proc(text=prompt, bitstreams=given), reference), type(given)

    # in a chat message: a .cotam path is a bitstream, a picture is coded
    conversation = [{"role": "user", "content": [{"type": "image", "path": str(cotam_file)},
                                                 {"type": "text", "text": "what is this ?"}]}]
    coded = proc.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert _equal(coded, reference) and not proc.last_coded[0].encoded_here

    with pytest.raises(ImageInputError, match="neither a .cotam bitstream nor an image file"):
        proc(text=prompt, images=b"not a picture")
    with pytest.raises(ImageInputError, match="bitstreams takes .cotam containers"):
        proc(text=prompt, bitstreams=png)


def test_pipeline_runs_a_saved_folder_end_to_end_and_reports_the_bits(saved):
    from transformers import pipeline

    folder, model, proc, picture, png = saved
    pipe = pipeline("image-text-to-text", model=str(folder))
    assert type(pipe.model) is type(model) and isinstance(pipe.processor, CoTAMProcessor)
    seen = []
    pipe.processor.add_encode_listener(seen.append)
    chat = [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": "what is this ?"}]}]
    [out] = pipe(text=chat, max_new_tokens=3, return_full_text=False)
    [record] = pipe.processor.last_coded

    inputs = proc.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    [stream] = unpack_bitstreams(inputs["pixel_values"])
    assert record.kind == "image" and record.encoded_here and record.bits == 8 * len(stream)
    assert record.bpp == pytest.approx(8 * len(stream) / (picture.width * picture.height))
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    expected = proc.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out["generated_text"].strip() == expected.strip()  # the model ran on the same real bitstream

    # non-chat form, a path; then two inputs: the listener sees one call per input
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}],
                                    add_generation_prompt=True)
    pipe(images=str(png), text=text, max_new_tokens=2)
    assert pipe.processor.last_coded[0].bits == record.bits  # the same picture, coded the same
    seen.clear()
    pipe(text=[chat, chat], max_new_tokens=2)
    assert [[r.bits for r in call] for call in seen] == [[record.bits], [record.bits]]


_AUTO_SCRIPT = r"""
import json, sys
folder = sys.argv[1]
early = sys.argv[2] == "transformers-first"
if early:
    from transformers import AutoConfig  # transformers' Auto classes before our package
import cotam_llava
light = not early and not any(m in sys.modules for m in ("torch", "transformers", "numpy"))
if not early:
    # a model file that imports the Auto classes half-way through its own import (modeling_layers does)
    from transformers import LlavaForConditionalGeneration  # noqa: F401
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, pipeline
names = [type(AutoConfig.from_pretrained(folder)).__name__,
         type(AutoModelForImageTextToText.from_pretrained(folder)).__name__,
         type(AutoProcessor.from_pretrained(folder)).__name__]
if not early:
    names.append(type(pipeline("image-text-to-text", model=folder).processor).__name__)
print(json.dumps({"light": light, "names": names}))
"""


def test_a_bare_import_registers_the_auto_classes_and_stays_light(saved):
    folder = saved[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    runs = {order: subprocess.Popen([sys.executable, "-c", _AUTO_SCRIPT, str(folder), order], cwd=folder.parent,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for order in ("cotam-first", "transformers-first")}  # in parallel: each imports torch and transformers
    results = {}
    for order, run in runs.items():
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, f"{order}: {err[-3000:]}"
        results[order] = json.loads(out.strip().splitlines()[-1])
    assert results["cotam-first"]["light"]  # torch, transformers, numpy not imported by `import cotam_llava`
    expected = ["CoTAMLlavaConfig", "CoTAMLlavaForConditionalGeneration", "CoTAMProcessor"]
    assert results["cotam-first"]["names"] == expected + ["CoTAMProcessor"]
    assert results["transformers-first"]["names"] == expected


def test_a_onevision_pipeline_runs_from_objects_and_an_unsavable_host_is_our_error(tmp_path):
    from transformers import pipeline

    from cotam_llava.errors import ConfigError

    model, proc, _, _ = tiny_hosts.build_cotam("onevision", tmp_path)
    picture = _picture()
    pipe = pipeline("image-text-to-text", model=model, processor=proc)
    chat = [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": "what is this ?"}]}]
    [out] = pipe(text=chat, max_new_tokens=2, return_full_text=False)
    [record] = proc.last_coded
    inputs = proc.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert record.kind == "image" and record.bits == 8 * sum(len(s) for s in unpack_bitstreams(inputs["pixel_values"]))
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out["generated_text"].strip() == proc.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:],
                                                                  skip_special_tokens=True).strip()
    missing = [n for n in proc.host.get_attributes() if getattr(proc.host, n, None) is None]
    if missing:  # here: no torchvision, so no OneVision video processor; transformers' save raises AttributeError
        with pytest.raises(ConfigError, match="cannot be saved"):
            proc.save_pretrained(tmp_path / "saved")
    else:
        proc.save_pretrained(tmp_path / "saved")
        assert type(CoTAMProcessor.from_pretrained(tmp_path / "saved").host) is type(proc.host)
