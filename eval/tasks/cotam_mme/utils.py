"""cotam_mme: lmms-eval's own MME scoring, plus each image's bpp (see cotam_llava.evaluation.lmms_tasks)."""

from lmms_eval.tasks.mme.utils import mme_process_results

from cotam_llava.evaluation.lmms_tasks import with_rate

process_results = with_rate(mme_process_results)
