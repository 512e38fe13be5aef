"""Build hook: a wheel carries the shipped codec, adapter and lmms-eval tasks as package data.

Everything else is declared in setup.cfg. In a clone the files are read from ``checkpoints/`` and ``eval/tasks/``
(see ``cotam_llava/shipped.py``); a built wheel has copies under ``cotam_llava/_shipped/`` so that a plain
``pip install`` user gets the same defaults. Editable installs copy nothing (they read the clone).
"""
import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _shipped_table():
    spec = importlib.util.spec_from_file_location("_cotam_shipped", ROOT / "cotam_llava" / "shipped.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SHIPPED


class BuildWithShippedData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for in_repo, in_package, marker in _shipped_table().values():
            source = ROOT / in_repo
            if not (source / marker).is_file():
                raise SystemExit(f"setup.py: {source / marker} is missing; a wheel must carry {in_repo}")
            target = Path(self.build_lib) / "cotam_llava" / "_shipped" / in_package
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithShippedData})
