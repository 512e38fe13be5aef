"""A wheel built from the repository works without the repository: default codec, adapter and lmms-eval tasks."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotam_llava import shipped

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["cotam_llava", "checkpoints/elic-small", "checkpoints/adapter-dinov2", "eval/tasks", "patches/llava",
           "setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (so no build/ folder lands in the clone)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-w", str(out), "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = out.glob("cotam_llava-*.whl")
    return built


def test_wheel_carries_the_shipped_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for in_repo, in_package, _ in shipped.SHIPPED.values():
        expected = {f"cotam_llava/_shipped/{in_package}/{p.relative_to(REPO / in_repo)}"
                    for p in (REPO / in_repo).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        assert expected <= names, sorted(expected - names)[:5]
    assert "cotam_llava/codec/model.py" in names
    assert not any(n.startswith(("runs/", "tests/", "build/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "cotam = cotam_llava.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_encodes_with_its_own_default_codec(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel), "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(work / "a.png")
    env = {k: v for k, v in os.environ.items() if k != "COTAM_CHECKPOINT"}
    env["PYTHONPATH"] = str(target)  # ahead of the clone's editable install
    probe = ("import cotam_llava, cotam_llava.shipped as s; "
             "print(cotam_llava.__file__); print(s.default_codec()); print(s.default_adapter()); print(s.tasks_dir())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    package, codec, adapter, tasks = done.stdout.split()
    assert Path(package).is_relative_to(target)
    for folder in (codec, adapter, tasks):
        assert Path(folder).is_relative_to(target / "cotam_llava" / "_shipped"), folder
    done = subprocess.run([sys.executable, "-m", "cotam_llava", "paths", "--tasks"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and Path(done.stdout.strip()) == Path(tasks)
    done = subprocess.run([sys.executable, "-m", "cotam_llava", "encode", "a.png", "-o", "a.cotam", "--quality", "0"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "a.cotam").stat().st_size > 0
