"""lmms-eval plugin (``--model cotam_llava``), the tasks in eval/tasks and the sweep, with a tiny random LLaVA.

lmms-eval 0.7.3 exits 0 even when a run fails, so the end-to-end tests read the results file, never the
exit status. Every lmms-eval run here is a subprocess (its import alone takes ~15 s on this CPU).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install --no-deps lmms-eval==0.7.3)")

import tiny_hosts  # noqa: E402
from cotam_llava.errors import ConfigError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "eval" / "tasks"
LMMS_EVAL = [sys.executable, "-m", "lmms_eval"]
SHIPPED_TASKS = {"cotam_tiny", "cotam_mme", "cotam_mmbench_en", "cotam_textvqa_val", "cotam_videomme"}


@pytest.fixture(scope="module")
def cotam_dir(tmp_path_factory) -> Path:
    """A saved tiny CoTAM LLaVA (CLIP-style host, canvas 64, no guidance)."""
    root = tmp_path_factory.mktemp("lmms")
    model, processor, _, _ = tiny_hosts.build_cotam("llava", root)
    model.save_pretrained(root / "cotam")
    processor.save_pretrained(root / "cotam")
    return root / "cotam"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    sys.path.insert(0, str(TASKS / "cotam_tiny"))
    try:
        import utils as tiny_utils  # eval/tasks/cotam_tiny/utils.py
    finally:
        sys.path.pop(0)
        sys.modules.pop("utils", None)
    return tiny_utils.build_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def task_manager():
    """lmms-eval's task index with eval/tasks included (indexing takes a few seconds: built once)."""
    from lmms_eval.tasks import TaskManager

    return TaskManager("ERROR", include_path=str(TASKS))


def _run_lmms_eval(args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(LMMS_EVAL + args, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def _results_file(out: Path) -> Path:
    from cotam_llava.evaluation.task_sweep import results_files

    files = results_files(out)
    assert len(files) == 1, f"expected one results file under {out}, found {files}"
    return files[0]


# --------------------------------------------------------------------------- discovery
def test_plugin_is_listed_and_resolves():
    proc = subprocess.run([str(Path(sys.executable).with_name("lmms-eval")), "models"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "cotam_llava" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]

    import lmms_eval.models as models
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM

    assert "cotam_llava" in models.list_available_models()
    assert models.get_model("cotam_llava") is CoTAMLlavaLMM


def test_shipped_tasks_load_and_reference_existing_functions(task_manager):
    from lmms_eval.utils import load_yaml_config

    assert SHIPPED_TASKS <= set(task_manager.all_tasks)
    for name in SHIPPED_TASKS:
        config = load_yaml_config(str(TASKS / name / f"{name}.yaml"), mode="full")  # imports every !function
        assert config["task"] == name and config["output_type"] == "generate_until"
        for key in ("class", "process_docs", "doc_to_visual", "doc_to_text", "process_results"):
            assert callable(config[key]), (name, key)
        for metric in config["metric_list"]:
            assert isinstance(metric["aggregation"], str) or callable(metric["aggregation"]), (name, metric)
        assert "bpp" in {m["metric"] for m in config["metric_list"]}
        if "cotam_score" in config["metadata"]:  # the score eval/sweep.py plots
            assert config["metadata"]["cotam_score"] in {m["metric"] for m in config["metric_list"]}


def test_real_task_without_its_data_says_which_variable(task_manager, monkeypatch):
    from lmms_eval.tasks import get_task_dict

    monkeypatch.delenv("COTAM_DATA_MME", raising=False)
    with pytest.raises(ConfigError, match="set COTAM_DATA_MME to the local copy"):
        get_task_dict(["cotam_mme"], task_manager)
    monkeypatch.setenv("COTAM_DATA_MME", "/nonexistent/mme")
    with pytest.raises(ConfigError, match="not found: /nonexistent/mme"):
        get_task_dict(["cotam_mme"], task_manager)


# --------------------------------------------------------------------------- model_args
@pytest.mark.parametrize("args, message", [
    ({"pretrained": "x", "foo": 1}, "unknown model_args for cotam_llava: foo; allowed: pretrained, cotam, codec"),
    ({"codec": "jpeg"}, "need pretrained="),
    ({"pretrained": "x", "codec": "elic"}, "codec='elic' is unknown; choose from cotam, cotam-noguide"),
    ({"pretrained": "x", "quality": 10}, r"quality=10 is out of range \[0, 9\]"),
    ({"pretrained": "x", "codec": "jpeg", "quality": 0}, r"quality=0 is out of range \[1, 100\]"),
    ({"pretrained": "x", "quality": 2.5}, "quality must be an integer"),
    ({"pretrained": "x", "codec": "none", "quality": 3}, "takes no quality"),
    ({"pretrained": "x", "dtype": "fp8"}, "dtype='fp8' is unknown"),
    ({"pretrained": "x", "batch_size": "auto"}, "fixed batch_size"),
    ({"pretrained": "x", "batch_size": 0}, "batch_size=0 is out of range"),
    ({"pretrained": "x", "max_frames": "many"}, "max_frames must be an integer"),
    ({"pretrained": "x", "guidance_rule": "oracle"}, "guidance_rule='oracle' is unknown; choose from paper, host"),
    ({"pretrained": "x", "guidance_rule": "host", "guidance": "dinov2-imgfocus"}, "uses the model's own vision encoder"),
])
def test_model_args_validation(args, message):
    from cotam_llava.evaluation.lmms_plugin import EvalSettings

    with pytest.raises(ConfigError, match=message):
        EvalSettings.from_model_args(args)


def test_model_args_defaults_and_lmms_eval_flags():
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM, EvalSettings, parse_model_args

    s = EvalSettings.from_model_args(parse_model_args("pretrained=/m,codec=webp,batch_size=4,max_frames=32"))
    assert (s.codec, s.quality, s.batch_size, s.max_frames, s.cotam) == ("webp", 80, 4, 32, None)
    assert EvalSettings.from_model_args({"pretrained": "/m"}).quality is None  # learned: the model's own default
    with pytest.raises(ConfigError, match="key=value pairs"):
        parse_model_args("pretrained")
    with pytest.raises(ConfigError, match="unknown model_args for cotam_llava: revision"):  # before any loading
        CoTAMLlavaLMM.create_from_arg_string("pretrained=/nonexistent,revision=main", {"batch_size": "1", "device": None})


# --------------------------------------------------------------------------- codecs in-process
def test_codecs_count_real_bytes(cotam_dir):
    import numpy as np
    from PIL import Image

    from cotam_llava.codec.classical import PillowCodec
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM

    image = Image.fromarray((np.arange(96 * 64 * 3) % 251).astype(np.uint8).reshape(64, 96, 3))
    jpeg = CoTAMLlavaLMM(pretrained=str(cotam_dir), codec="jpeg", quality=30)
    coded = jpeg._code([image])
    picture = image.crop((16, 0, 80, 64))  # the host's centre square, already at the 64-pixel canvas
    assert coded.rate.bits == 8 * len(PillowCodec("jpeg").encode(np.asarray(picture), 30))
    assert coded.rate.bpp == pytest.approx(coded.rate.bits / (96 * 64))
    tower = jpeg.model.vision_tower
    assert not tower.compress_pixels and not tower.adapter_enabled
    answers = jpeg._generate([jpeg._prompt("what is this ?", coded)] * 2, [coded, coded], {"max_new_tokens": 2})
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    base = CoTAMLlavaLMM(pretrained=str(cotam_dir), codec="base", quality=2)
    coded = base._code([image, image])
    stream = base.processor.encode_images([image], quality=2)[0]
    assert coded.rate.bits == 2 * 8 * len(stream) and coded.rate.items == 2  # the real container, both images
    assert base.model.vision_tower.compress_pixels and not base.model.vision_tower.adapter_enabled
    assert base._generate([base._prompt("what is this ?", coded)], [coded], {"max_new_tokens": 2, "until": ["w1"]})

    none = CoTAMLlavaLMM(pretrained=str(cotam_dir), codec="none")
    assert none._code([image]).rate.bpp == 24.0 and none.quality is None


# --------------------------------------------------------------------------- end to end
def test_tiny_task_end_to_end(cotam_dir, tiny_data, tmp_path):
    """lmms-eval on cotam_tiny (2 documents): the results file holds the score and the bpp of real bitstreams."""
    out, bits_log = tmp_path / "out", tmp_path / "bits.jsonl"
    proc = _run_lmms_eval(
        ["--model", "cotam_llava", "--model_args", f"pretrained={cotam_dir},codec=cotam-noguide,quality=3,batch_size=2",
         "--tasks", "cotam_tiny", "--include_path", str(TASKS), "--output_path", str(out), "--log_samples",
         "--limit", "2"],
        env={"COTAM_DATA_TINY": str(tiny_data), "COTAM_BITS_LOG": str(bits_log)})
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(_results_file(out).read_text())
    res = data["results"]["cotam_tiny"]
    assert 0.0 <= res["exact_match,none"] <= 1.0, log
    assert res["bpp,none"] > 0 and math.isfinite(res["bpp,none"])

    lines = [json.loads(line) for line in bits_log.read_text().splitlines()]
    assert sorted(r["doc_id"] for r in lines) == [0, 1]
    assert all(r["codec"] == "cotam-noguide" and r["quality"] == 3 and r["bits"] > 0 for r in lines)
    assert {r["pixels"] for r in lines} == {96 * 64, 64 * 64}  # the first two generated pictures
    assert res["bpp,none"] == pytest.approx(sum(r["bits"] / r["pixels"] for r in lines) / 2)
    assert data["throughput"]["avg_cotam_bpp"] == pytest.approx(res["bpp,none"])
    assert data["throughput"]["avg_cotam_bpp/cotam_tiny"] == pytest.approx(res["bpp,none"])

    # the bits are those of the real container the processor makes for the same picture
    from datasets import load_from_disk

    from cotam_llava.models import CoTAMProcessor

    processor = CoTAMProcessor.from_pretrained(cotam_dir)
    first = load_from_disk(str(tiny_data))["test"][0]["image"]
    doc0 = next(r for r in lines if r["doc_id"] == 0)
    assert doc0["bits"] == 8 * len(processor.encode_images([first], quality=3)[0])

    samples = [json.loads(line) for line in next(out.glob("*/*_samples_cotam_tiny.jsonl")).read_text().splitlines()]
    assert len(samples) == 2 and all(s["bpp"] > 0 and "exact_match" in s for s in samples)


@pytest.mark.slow
def test_failed_run_exits_0_but_writes_no_results(cotam_dir, tmp_path):
    """Why the tests and the sweep read the results file: lmms-eval reports our error and still exits 0."""
    out = tmp_path / "out"
    proc = _run_lmms_eval(["--model", "cotam_llava", "--model_args", f"pretrained={cotam_dir},colour=red",
                           "--tasks", "cotam_tiny", "--include_path", str(TASKS), "--output_path", str(out)])
    assert "unknown model_args for cotam_llava: colour" in proc.stdout + proc.stderr
    assert not list(out.glob("**/*_results.json"))


def _fake_real_data(root: Path) -> dict[str, str]:
    """Two documents in each real task's schema (images drawn here), as save_to_disk folders."""
    import datasets
    from PIL import Image

    def img(colour):
        return Image.new("RGB", (80, 60), colour)

    mme = {"question_id": ["a.png", "a.png"], "image": [img((200, 0, 0))] * 2,
           "question": ["Is this red? Please answer yes or no.", "Is this blue? Please answer yes or no."],
           "answer": ["Yes", "No"], "category": ["color", "color"]}
    tv = {"question_id": [1, 2], "image": [img((0, 200, 0)), img((0, 0, 200))], "question": ["what is this ?"] * 2,
          "answers": [["w1"] * 10, ["blue"] * 10], "answer": ["w1", "blue"], "ocr_tokens": [[], []]}
    mb = {"index": [0, 1], "image": [img((9, 9, 9)), img((250, 250, 250))], "question": ["what is this ?"] * 2,
          "A": ["black"] * 2, "B": ["white"] * 2, "C": ["red"] * 2, "D": ["nan"] * 2, "answer": ["A", "B"],
          "hint": ["nan"] * 2, "source": ["x"] * 2, "split": ["dev"] * 2, "category": ["c"] * 2, "L2-category": ["l"] * 2}
    env = {}
    for name, rows, split, var in (("mme", mme, "test", "COTAM_DATA_MME"), ("textvqa", tv, "validation", "COTAM_DATA_TEXTVQA"),
                                   ("mmbench", mb, "dev", "COTAM_DATA_MMBENCH")):
        ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
        datasets.DatasetDict({split: ds}).save_to_disk(str(root / name))
        env[var] = str(root / name)
    return env


@pytest.mark.slow
def test_real_task_configs_run_on_local_copies(cotam_dir, tmp_path):
    """cotam_mme, cotam_textvqa_val and cotam_mmbench_en end to end on tiny local copies (lmms-eval's own scoring)."""
    env = _fake_real_data(tmp_path / "data")
    out = tmp_path / "out"
    proc = _run_lmms_eval(["--model", "cotam_llava", "--model_args", f"pretrained={cotam_dir},codec=jpeg,quality=40",
                           "--tasks", "cotam_mme,cotam_textvqa_val,cotam_mmbench_en", "--include_path", str(TASKS),
                           "--output_path", str(out), "--gen_kwargs", "max_new_tokens=4"], env=env, timeout=600)
    data = json.loads(_results_file(out).read_text())
    res = data["results"]
    assert set(res) == {"cotam_mme", "cotam_textvqa_val", "cotam_mmbench_en"}, proc.stdout[-3000:]
    assert math.isfinite(res["cotam_mme"]["mme_perception_score,none"])
    assert 0 <= res["cotam_textvqa_val"]["exact_match,none"] <= 1
    assert 0 <= res["cotam_mmbench_en"]["gpt_eval_score,none"] <= 100
    assert all(r["bpp,none"] > 0 for r in res.values())


@pytest.mark.slow
def test_sweep_on_the_tiny_task(cotam_dir, tiny_data, tmp_path, monkeypatch):
    """eval/sweep.py: 2 codecs × 2 qualities on cotam_tiny (--limit 2) → sweep.csv, BD-rate table, RD plots."""
    sys.path.insert(0, str(REPO / "eval"))
    try:
        import sweep
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("COTAM_DATA_TINY", str(tiny_data))
    out = tmp_path / "sweep"
    # the tiny model names no guidance model, so codec=cotam is refused (a ConfigError) and cotam-noguide swept
    assert sweep.main(["--model", str(cotam_dir), "--codecs", "base,cotam-noguide", "--qualities", "2,6", "--tasks",
                       "cotam_tiny", "--limit", "2", "--out", str(out)]) == 0
    from cotam_llava.evaluation.task_sweep import read_csv

    points = read_csv(out / "sweep.csv")
    assert sorted((p.codec, p.quality) for p in points) == [("base", 2), ("base", 6), ("cotam-noguide", 2),
                                                             ("cotam-noguide", 6)]
    assert all(p.task == "cotam_tiny" and p.bpp > 0 and p.metric == "exact_match" for p in points)
    by = {(p.codec, p.quality): p.bpp for p in points}
    assert by[("base", 6)] > by[("base", 2)]  # higher quality level, more bits
    assert (out / "bdrate.md").is_file() and (out / "bdrate.csv").is_file()
    assert (out / "rd_cotam_tiny.png").is_file() and (out / "rd_average.png").is_file()
    assert len((out / "base_q2" / "bits.jsonl").read_text().splitlines()) == 2


# --------------------------------------------------------------------------- sweep tables (no lmms-eval run)
def _results_json(path: Path, task_scores: dict[str, tuple[float, float]], metric: str = "acc") -> Path:
    """A minimal lmms-eval results file: task → (score, bpp)."""
    data = {"results": {t: {f"{metric},none": s, "bpp,none": b} for t, (s, b) in task_scores.items()},
            "configs": {t: {"metadata": {"version": 0, "cotam_score": metric}} for t in task_scores},
            "higher_is_better": {t: {metric: True, "bpp": False} for t in task_scores},
            "n-samples": {t: {"original": 10, "effective": 10} for t in task_scores}}
    path.write_text(json.dumps(data))
    return path


def test_sweep_tables_from_results_files(tmp_path):
    from cotam_llava.evaluation.task_sweep import bd_table, read_csv, read_results, write_bd_table, write_csv

    points = []
    for q, bpp in enumerate([0.1, 0.2, 0.4, 0.8]):
        s = 40 + 10 * math.log2(bpp / 0.1)
        for codec, k in (("base", 1.0), ("cotam", 0.8)):  # cotam: every score at 0.8 × the rate
            f = _results_json(tmp_path / f"{codec}{q}.json", {"t_a": (s, bpp * k), "t_b": (2 * s, bpp * k)})
            points += read_results(f, codec, q)
    points += read_results(_results_json(tmp_path / "none.json", {"t_a": (80, 24.0), "t_b": (160, 24.0)}), "none", None)
    assert len(points) == 18 and {p.metric for p in points} == {"acc"}
    again = read_csv(write_csv(points, tmp_path / "sweep.csv"))
    assert [(p.codec, p.quality, p.task, p.score, p.bpp) for p in again] == \
        [(p.codec, p.quality, p.task, p.score, p.bpp) for p in points]
    rows = {(r.codec, r.task): r for r in bd_table(points, "base")}
    assert set(rows) == {("cotam", "t_a"), ("cotam", "t_b"), ("cotam", "average"), ("cotam", "mean")}
    for task in ("t_a", "t_b", "average", "mean"):  # relative scores (÷ the none run) keep the shift exact
        assert rows[("cotam", task)].bd_rate == pytest.approx(-20.0, abs=1e-6), task
    assert rows[("cotam", "t_a")].bd_score == pytest.approx(10 * math.log2(1.25), abs=1e-6)
    _, md = write_bd_table(list(rows.values()), tmp_path, "base")
    assert "| cotam | -20.00 | -20.00 | -20.00 | -20.00 |" in md.read_text()


def test_sweep_reads_throughput_rate_for_stock_tasks_and_rejects_runs_without_rate(tmp_path):
    from cotam_llava.errors import CoTAMError
    from cotam_llava.evaluation.task_sweep import read_results

    data = {"results": {"mme": {"mme_perception_score,none": 1200.0}}, "configs": {"mme": {"metadata": [{"version": 0}]}},
            "higher_is_better": {"mme": {"mme_perception_score": True}}, "throughput": {"avg_cotam_bpp/mme": 0.3}}
    (tmp_path / "r.json").write_text(json.dumps(data))
    [p] = read_results(tmp_path / "r.json", "cotam", 4)
    assert (p.metric, p.score, p.bpp, p.rate_unit) == ("mme_perception_score", 1200.0, 0.3, "bpp")
    del data["throughput"]
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(CoTAMError, match="has no bpp"):
        read_results(tmp_path / "r.json", "cotam", 4)


def test_sweep_help_and_bad_codec(capsys):
    sys.path.insert(0, str(REPO / "eval"))
    try:
        import sweep
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as exc:
        sweep.main(["--help"])
    assert exc.value.code == 0 and "--qualities" in capsys.readouterr().out
    assert sweep.main(["--model", "m", "--codecs", "elic", "--tasks", "t", "--out", "/tmp/unused-sweep"]) == 1
    assert "unknown codec 'elic'" in capsys.readouterr().err


# --------------------------------------------------------------------------- generate_until in-process
def _instances(docs: list[dict], task: str, doc_to_visual, context: str = "what is this ?", gen=None):
    from lmms_eval.api.instance import Instance

    gen = gen or {"max_new_tokens": 2, "until": ["</s>"]}
    return [Instance("generate_until", (context, dict(gen), doc_to_visual, i, task, "test"), idx=0,
                     metadata={"task": task, "doc_id": i, "repeats": 1}) for i in range(len(docs))]


def test_generate_until_batches_images_and_text_and_fills_the_ledger(cotam_dir):
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM
    from cotam_llava.evaluation.lmms_tasks import DOC_KEY, RATE_LEDGER, rate_metrics
    from PIL import Image

    lm = CoTAMLlavaLMM(pretrained=str(cotam_dir), codec="cotam-noguide", quality=1, batch_size=3)
    docs = [{"image": Image.new("RGB", (64 + 16 * i, 64), (40 * i, 90, 200)), DOC_KEY: f"k:{i}"} for i in range(4)]
    docs.append({"image": None, DOC_KEY: "k:text"})  # a text-only request in the same run
    lm.task_dict = {"t": {"test": docs}}
    answers = lm.generate_until(_instances(docs, "t", lambda d: [d["image"]] if d["image"] is not None else []))
    assert len(answers) == 5 and all(isinstance(a, str) for a in answers)
    assert set(RATE_LEDGER) == {"k:0", "k:1", "k:2", "k:3", "k:text"}
    for i in range(4):
        rate = RATE_LEDGER[f"k:{i}"]
        assert rate.kind == "image" and rate.pixels == (64 + 16 * i) * 64
        assert rate_metrics(docs[i]) == {"bpp": pytest.approx(rate.bits / rate.pixels)}
    assert rate_metrics(docs[4]) == {} and rate_metrics({"other": 1}) == {}
    summary = lm.rate_summary()
    assert summary["requests"] == 5 and summary["tasks"]["t"]["bpp"] == pytest.approx(summary["bpp"])
    with pytest.raises(NotImplementedError, match="generate_until only"):
        lm.loglikelihood([])


def test_host_guidance_rule_codes_with_the_models_own_encoder(tmp_path):
    from cotam_llava.codec.guidance import HostGuidance
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM
    from cotam_llava.evaluation.lmms_tasks import DOC_KEY
    from PIL import Image

    model, processor, _, _ = tiny_hosts.build_cotam("llava", tmp_path)
    with pytest.raises(ConfigError, match="applies to codec=cotam or cotam-noadapter only"):
        CoTAMLlavaLMM.from_model(model, processor, codec="base", guidance_rule="host")
    lm = CoTAMLlavaLMM.from_model(model, processor, codec="cotam-noadapter", quality=3, guidance_rule="host")
    assert isinstance(lm.edge.guidance, HostGuidance) and lm.edge.guidance.encoder is model.vision_tower.encoder
    import numpy as np

    rng = np.random.default_rng(0)
    docs = [{"image": Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)), DOC_KEY: "h:0"}]
    lm.task_dict = {"h": {"test": docs}}
    [answer] = lm.generate_until(_instances(docs, "h", lambda d: [d["image"]]))
    assert isinstance(answer, str) and lm.records[0]["bits"] > 0


def test_video_requests_on_onevision(tmp_path):
    """LLaVA-OneVision (built in memory: its processor cannot be saved without torchvision) on a real clip."""
    from cotam_llava.evaluation.lmms_plugin import CoTAMLlavaLMM

    clips = sorted((REPO.parent / "shared" / "data" / "video").glob("*.mp4"))
    if not clips:
        pytest.skip("no clips in ../shared/data/video")
    model, processor, _, _ = tiny_hosts.build_cotam("onevision", tmp_path)
    lm = CoTAMLlavaLMM.from_model(model, processor, codec="cotam-noguide", quality=2, max_frames=3)
    docs = [{"video": str(clips[0])}]
    lm.task_dict = {"v": {"test": docs}}
    [answer] = lm.generate_until(_instances(docs, "v", lambda d: [d["video"]]))
    assert isinstance(answer, str)
    [record] = lm.records
    assert record["kind"] == "video" and record["frames"] == 3
    assert record["bits_per_frame"] == pytest.approx(record["bits"] / 3) and record["bpp"] > 0
    assert lm.rate_summary()["bits_per_frame"] == pytest.approx(record["bits_per_frame"])
    with pytest.raises(ConfigError, match="does not apply"):
        CoTAMLlavaLMM.from_model(model, processor, pretrained="x")
