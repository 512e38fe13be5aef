"""cotam-llava: CoTAM, an image and video codec tailored to multimodal LLMs.

Importing the package loads nothing heavy and changes no global state; the codec
lives in :mod:`cotam_llava.codec`, benchmarks in :mod:`cotam_llava.evaluation`,
the command line in :mod:`cotam_llava.cli`.
"""

__version__ = "0.1.0"
