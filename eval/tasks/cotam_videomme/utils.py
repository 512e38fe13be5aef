"""cotam_videomme: videos from the local copy in $COTAM_DATA_VIDEOMME; lmms-eval's own Video-MME scoring,
plus each video's bits per frame and bpp (cotam_llava.evaluation.lmms_tasks)."""

from __future__ import annotations

import os

from lmms_eval.tasks.videomme.utils import videomme_process_results

from cotam_llava.errors import ImageInputError
from cotam_llava.evaluation.lmms_tasks import resolve_data_path, with_rate

ENV = "COTAM_DATA_VIDEOMME"
SUFFIXES = (".mp4", ".MP4", ".mkv")


def doc_to_visual(doc: dict) -> list[str]:
    """The video file of a question: <root>/data/<videoID>.mp4 (or .MP4/.mkv; or directly in <root>)."""
    root = resolve_data_path(f"${{{ENV}}}", "cotam_videomme")
    for folder in (root / "data", root):
        for suffix in SUFFIXES:
            path = folder / f"{doc['videoID']}{suffix}"
            if path.is_file():
                return [os.fspath(path)]
    raise ImageInputError(f"video {doc['videoID']} not found under {root / 'data'} (unzip the Video-MME videos there)")


process_results = with_rate(videomme_process_results)
