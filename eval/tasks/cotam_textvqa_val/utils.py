"""cotam_textvqa_val: lmms-eval's own TextVQA scoring, plus each image's bpp (cotam_llava.evaluation.lmms_tasks)."""

from lmms_eval.tasks.textvqa.utils import textvqa_process_results

from cotam_llava.evaluation.lmms_tasks import with_rate

process_results = with_rate(textvqa_process_results)
