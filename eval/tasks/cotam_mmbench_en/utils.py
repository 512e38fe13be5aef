"""cotam_mmbench_en: lmms-eval's own MMBench-EN processing, plus each image's bpp (cotam_llava.evaluation.lmms_tasks)."""

from lmms_eval.tasks.mmbench.en_utils import mmbench_process_results

from cotam_llava.evaluation.lmms_tasks import with_rate

process_results = with_rate(mmbench_process_results)
