"""The extra-photo fetcher's rules (photo / resolution / duplicate / family / split) on synthetic files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_eval_script
from PIL import Image

from cotam_llava.training.photo_sources import (
    PhotoSource, assign_split, dhash, family, hamming, photo_check, reference_hashes, scan, select,
)

REPO = Path(__file__).resolve().parents[1]


def _photo(seed: int, w: int = 384, h: int = 320) -> Image.Image:
    """Smooth colour structure plus sensor-like noise: passes as a photograph."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(30, 226, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    img = np.asarray(coarse, dtype=np.float64) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _graphic(w: int = 400, h: int = 300) -> Image.Image:
    """Flat fills and a few colours: a diagram or screenshot."""
    a = np.full((h, w, 3), 240, np.uint8)
    a[50:150, 40:200] = (200, 30, 30)
    a[180:260, 220:380] = (30, 30, 200)
    return Image.fromarray(a)


def test_photo_rules():
    assert photo_check(_photo(0)) is None
    assert "photo-like" in photo_check(_graphic())
    assert "too small" in photo_check(_photo(1, 200, 300))
    assert "shape" in photo_check(_photo(2, 1200, 300))
    assert photo_check(_photo(3).convert("L")) == "grayscale"
    rgba = _photo(4).convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[:40, :40, 3] = 0
    assert photo_check(Image.fromarray(alpha)) == "has transparency"
    assert photo_check(_photo(5).convert("RGBA")) is None  # opaque alpha is fine


def test_dhash_catches_resized_and_recompressed_copies(tmp_path):
    img = _photo(7, 640, 480)
    img.resize((320, 240), Image.BICUBIC).save(tmp_path / "small.jpg", quality=70)
    copy = Image.open(tmp_path / "small.jpg")
    assert hamming(dhash(img), dhash(copy)) <= 6
    assert hamming(dhash(img), dhash(_photo(8, 640, 480))) > 6


def test_families_keep_views_of_one_scene_together():
    assert family("aloeL") == family("aloeR") == "aloe"
    assert family("leuvenA") == family("leuvenB")
    assert family("graf1") == family("graf3")
    assert family("motorcycle_left") == family("motorcycle_right") == "motorcycle"
    assert family("left") == family("right")
    assert family("scenetext01") != family("scenetext02")  # numbered photos stay distinct
    assert family("2011_000003") != family("2011_000006")


def test_split_is_deterministic_and_follows_shares():
    keys = [f"pkg/photo{i:03d}" for i in range(400)]
    splits = {"train": 0.0, "choose": 0.5, "report": 0.5}
    first = [assign_split(k, splits) for k in keys]
    assert first == [assign_split(k, splits) for k in keys]
    assert "train" not in first
    assert 150 < first.count("choose") < 250
    assert all(assign_split(k, {"a": 1.0}) == "a" for k in keys[:10])


def test_scan_and_select_drop_copies_partners_and_duplicates(tmp_path):
    root = tmp_path / "pkg"
    data = root / "usr/share/data"
    data.mkdir(parents=True)
    _photo(10, 800, 600).save(data / "big.png")
    _photo(10, 800, 600).resize((400, 300)).save(data / "big_small.jpg", quality=80)  # duplicate of big
    _photo(11).save(data / "tree.png")
    _photo(12).save(data / "statue_right.png")  # partner of a training photo
    _graphic().save(data / "chart.png")
    _photo(13, 100, 100).save(data / "thumb.png")
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    _photo(14).save(data / "skip_me.png")
    refs_dir = tmp_path / "train"
    refs_dir.mkdir()
    _photo(11).resize((200, 160)).save(refs_dir / "tree_copy.jpg")  # the tree photo is already a training photo
    _photo(99).save(refs_dir / "misc_statue_left.png")

    source = PhotoSource("pkg", ("usr/share/data/*.png", "usr/share/data/*.jpg"), "test", exclude=("skip_*",))
    candidates = scan(root, source, "1.0")
    reasons = {Path(c.member).name: c.reason for c in candidates}
    assert "skip_me.png" not in reasons
    assert reasons["broken.jpg"] == "not decodable"
    assert "photo-like" in reasons["chart.png"]
    assert "too small" in reasons["thumb.png"]

    kept = select(candidates, reference_hashes([refs_dir]))
    assert [Path(c.member).name for c in kept] == ["big.png"]  # the largest copy wins
    reasons = {Path(c.member).name: c.reason for c in candidates}
    assert reasons["big_small.jpg"].startswith("near-duplicate of pkg:")
    assert reasons["tree.png"].startswith("copy of ") and "tree_copy.jpg" in reasons["tree.png"]
    assert reasons["statue_right.png"].startswith("another view of ")


@pytest.mark.parametrize("args, message", [
    (["--cache", str(REPO / "cache")], "outside the repository"),
    (["--train_share", "1.5"], "--train_share"),
    (["--exclude", "/nonexistent/kodak"], "not found"),
])
def test_script_refuses_bad_arguments(args, message, capsys):
    script = load_eval_script("fetch_photos")
    with pytest.raises(SystemExit) as exc:
        script.main(args)
    assert exc.value.code != 0
    assert message in capsys.readouterr().err


def test_collect_keeps_photos_whose_names_repeat(tmp_path, monkeypatch):
    """Two photos with one stem in different folders of a package both land in the cache (no overwrite)."""
    import cotam_llava.training.photo_sources as ps

    root = tmp_path / "extract" / "pkg"
    for i, folder in enumerate(("a", "b")):
        (root / folder).mkdir(parents=True)
        _photo(20 + i).save(root / folder / "home.png")
    monkeypatch.setattr(ps, "fetch_package", lambda package, cache: (root, "1.0"))
    source = PhotoSource("pkg", ("*/home.png",), "test")
    manifest = ps.collect(tmp_path / "cache", sources=[source], splits={"all": 1.0}, progress=False)
    files = sorted(p["file"] for p in manifest["photos"])
    assert len(files) == 2 and len(set(files)) == 2
    assert all((tmp_path / "cache" / f).is_file() for f in files)
