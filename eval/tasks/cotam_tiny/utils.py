"""``cotam_tiny``: six generated pictures with one question each — the whole lmms-eval path, offline, in seconds.

The data are drawn here (solid colours and simple shapes, three sizes) and saved as a ``datasets`` folder
(``save_to_disk``): in ``$COTAM_DATA_TINY`` when that is set, else in a folder under the system temp dir,
built on first use (deterministic, so every build is identical). Build it explicitly with::

    python eval/tasks/cotam_tiny/utils.py OUT_DIR

Answers are single words; the score is exact match (lmms-eval's own ``exact_match_hf_evaluate``), and
the rate (bpp) comes from :func:`cotam_llava.evaluation.lmms_tasks.with_rate`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from cotam_llava.evaluation.lmms_tasks import DOC_KEY, LocalDataTask, with_rate

VERSION = 1
ENV = "COTAM_DATA_TINY"
QUESTION_COLOUR = "what colour is this ?"
QUESTION_SHAPE = "what shape is this ?"

#: (name, size (w, h), background, foreground shape or None, question, answer)
ITEMS = [
    ("red", (96, 64), (220, 30, 30), None, QUESTION_COLOUR, "red"),
    ("green", (64, 64), (30, 180, 60), None, QUESTION_COLOUR, "green"),
    ("blue", (64, 96), (30, 60, 220), None, QUESTION_COLOUR, "blue"),
    ("yellow", (80, 80), (240, 220, 40), None, QUESTION_COLOUR, "yellow"),
    ("circle", (96, 96), (0, 0, 0), "circle", QUESTION_SHAPE, "circle"),
    ("square", (96, 64), (255, 255, 255), "square", QUESTION_SHAPE, "square"),
]


def draw(size: tuple[int, int], background: tuple[int, int, int], shape: str | None) -> Image.Image:
    image = Image.new("RGB", size, background)
    if shape is not None:
        w, h = size
        r = min(w, h) // 3
        box = (w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r)
        pen = ImageDraw.Draw(image)
        colour = (255 - background[0], 255 - background[1], 255 - background[2])
        (pen.ellipse if shape == "circle" else pen.rectangle)(box, fill=colour)
    return image


def build_tiny_dataset(out_dir: str | os.PathLike) -> Path:
    """Write the tiny task's data as a ``DatasetDict({"test": ...})`` folder; returns the folder."""
    import datasets

    rows = {"question_id": [], "image": [], "question": [], "answer": []}
    for name, size, background, shape, question, answer in ITEMS:
        rows["question_id"].append(name)
        rows["image"].append(draw(size, background, shape))
        rows["question"].append(question)
        rows["answer"].append(answer)
    features = datasets.Features({"question_id": datasets.Value("string"), "image": datasets.Image(),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string")})
    out = Path(out_dir)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(tmp))
    try:
        tmp.rename(out)  # atomic: a concurrent build of the same folder keeps one identical copy
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not out.is_dir():
            raise
    return out


def tiny_data_path() -> Path:
    env = os.environ.get(ENV)
    path = Path(env) if env else Path(tempfile.gettempdir()) / f"cotam_lmms_tiny_v{VERSION}"
    if not (path / "dataset_dict.json").is_file():
        build_tiny_dataset(path)
    return path


class CoTAMTinyTask(LocalDataTask):
    """The tiny task reads (and if needed first builds) its own generated data."""

    def local_data_path(self) -> Path:
        return tiny_data_path()


def doc_to_visual(doc: dict) -> list[Image.Image]:
    image = doc["image"].convert("RGB")
    if DOC_KEY in doc:  # lets a patched LLaVA's CoTAM image processor account this document's bits (--model llava)
        image.info[DOC_KEY] = doc[DOC_KEY]
    return [image]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}"


def _exact_match(doc: dict, results: list[str]) -> dict[str, float]:
    from lmms_eval.api.metrics import exact_match_hf_evaluate

    score = exact_match_hf_evaluate([results[0].strip()], [doc["answer"]], ignore_case=True, ignore_punctuation=True)
    return {"exact_match": float(score["exact_match"])}


process_results = with_rate(_exact_match)


if __name__ == "__main__":  # python eval/tasks/cotam_tiny/utils.py OUT_DIR
    if len(sys.argv) != 2:
        sys.exit("usage: python eval/tasks/cotam_tiny/utils.py OUT_DIR")
    print(build_tiny_dataset(sys.argv[1]))
