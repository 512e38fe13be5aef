"""Shared fixtures for the codec-core tests.

Everything here is deterministic and small: the whole default run stays fast on a
2-core CPU. Real photos come from ``../shared/data/kodak`` (relative to the repo
root); tests that need them skip with a clear reason when the folder is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KODAK_DIR = DATA_DIR / "kodak"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"

# `python -m pytest` from the repo root already puts the root on sys.path; a bare
# `pytest` (or running from another folder) does not, and the package may not be installed.
if str(REPO_ROOT) not in sys.path:
    try:
        import cotam_llava.errors  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))


def load_eval_script(name: str):
    """The module of ``eval/NAME.py`` (the eval scripts are not a package), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"eval_{name}", REPO_ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_synthetic_image(height: int, width: int) -> np.ndarray:
    """Deterministic uint8 (H, W, 3) test image: gradients, a checkerboard and stripes, no RNG."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.int64)
    r = (xx * 255) // max(width - 1, 1)
    g = (yy * 255) // max(height - 1, 1)
    checker = ((xx // 16 + yy // 16) % 2) * 96
    stripes = ((xx + 2 * yy) % 24 < 12) * 64
    b = (checker + stripes + (xx * yy) % 61) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


@pytest.fixture(scope="session")
def synthetic_factory():
    """The deterministic synthetic image builder: ``synthetic_factory(height, width)``."""
    return make_synthetic_image


@pytest.fixture(scope="session")
def synthetic_image() -> np.ndarray:
    """128×128 deterministic synthetic image (uint8, H×W×3)."""
    img = make_synthetic_image(128, 128)
    img.setflags(write=False)
    return img


@pytest.fixture(scope="session")
def tiny_codec():
    """The fixed-seed, untrained ``tiny`` codec, finalized (CDF tables built). Do not mutate."""
    from cotam_llava.codec.model import CoTAMELIC

    model = CoTAMELIC.from_preset("tiny", seed=0)
    model.eval()
    model.finalize()
    return model


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    if not KODAK_DIR.is_dir() or not any(KODAK_DIR.glob("*.png")):
        pytest.skip(f"Kodak photos not found in {KODAK_DIR} (expected ../shared/data/kodak/*.png)")
    return KODAK_DIR


@pytest.fixture(scope="session")
def kodak_photo(kodak_dir: Path) -> np.ndarray:
    """The full 768×512 kodim23.png as uint8 (512, 768, 3)."""
    from PIL import Image

    path = kodak_dir / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    arr.setflags(write=False)
    return arr


@pytest.fixture(scope="session")
def kodak_image(kodak_photo: np.ndarray) -> np.ndarray:
    """A 256×192 (W×H) crop of kodim23 (the parrots' heads): a real photo, fast to code."""
    crop = np.ascontiguousarray(kodak_photo[160:352, 256:512])
    crop.setflags(write=False)
    return crop


def make_tiny_vit(family: str, layers: int = 4, size: int = 112, num_register_tokens: int = 4):
    """A tiny random transformers vision model: clip, siglip, dinov2, dinov2reg or internvl."""
    import transformers

    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2)
    if family == "clip":
        return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**common, image_size=size, patch_size=14))
    if family == "siglip":
        return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**common, image_size=size, patch_size=14))
    if family == "dinov2":
        return transformers.Dinov2Model(transformers.Dinov2Config(**common, image_size=size, patch_size=14))
    if family == "dinov2reg":
        return transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            **common, image_size=size, patch_size=14, num_register_tokens=num_register_tokens))
    if family == "internvl":
        from transformers.models.internvl import InternVLVisionConfig, InternVLVisionModel

        return InternVLVisionModel(InternVLVisionConfig(**common, image_size=[size, size], patch_size=[14, 14]))
    raise ValueError(f"unknown family {family!r}")


def make_adapter_training_folder(root: Path) -> dict[str, Path]:
    """Four small noisy gradient photos (``root/photos``) and a tiny DINOv2 with its image processor
    (``root/encoder``, 56² input, canvas 64): what the adapter trainer's tests train on."""
    import transformers
    from PIL import Image

    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:80, 0:96]
    for i in range(4):
        smooth = np.stack([(x * (i + 1)) % 256, (y * 3) % 256, ((x + y) // 2) % 256], axis=-1)
        Image.fromarray(np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)).save(photos / f"p{i}.png")
    make_tiny_vit("dinov2", layers=3, size=56).save_pretrained(root / "encoder")
    transformers.BitImageProcessor(size={"height": 56, "width": 56}, do_center_crop=False).save_pretrained(root / "encoder")
    return {"root": root, "photos": photos, "encoder": root / "encoder"}
