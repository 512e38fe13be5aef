"""Video input: the frames a video MLLM samples, read with PyAV with bounded memory.

Video MLLMs (LLaVA-OneVision, LLaVA-Video, …) sample N frames uniformly over the clip
(``np.linspace(0, total − 1, N)``, rounded). CoTAM codes each sampled frame as an image,
with its own guidance, all in one ``.cotam`` container (items flagged as video frames).
Frames are decoded in one streaming pass and only the sampled ones are kept, so memory
does not grow with the length of the video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ImageInputError

__all__ = ["VIDEO_SUFFIXES", "is_video", "sample_frame_indices", "count_frames", "read_frames"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sample_frame_indices(total: int, num_frames: int) -> list[int]:
    """Uniformly spaced frame indices as video MLLMs sample them (all frames if fewer)."""
    if num_frames < 1:
        raise ImageInputError(f"need at least 1 frame, got {num_frames}")
    if total < 1:
        raise ImageInputError("the video has no frames")
    if total <= num_frames:
        return list(range(total))
    return [int(i) for i in np.round(np.linspace(0, total - 1, num_frames)).astype(int)]


def _open(path: str | Path):
    try:
        import av
    except ImportError as exc:  # optional dependency
        raise ImageInputError("video input needs PyAV: pip install av") from exc
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise ImageInputError(f"cannot open video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise ImageInputError(f"{path} has no video stream")
    return container


def count_frames(path: str | Path) -> int:
    """Number of frames, by counting the video stream's packets (no decoding)."""
    import av

    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        except av.error.FFmpegError as exc:
            raise ImageInputError(f"cannot read video {path}: {exc}") from exc


def read_frames(path: str | Path, num_frames: int) -> tuple[list[np.ndarray], list[int]]:
    """The uniformly sampled frames of a video.

    Returns:
        (frames as uint8 (H, W, 3) arrays, their indices in the video), in order.
    """
    import av

    wanted = sample_frame_indices(count_frames(path), num_frames)
    keep = set(wanted)
    frames: list[np.ndarray] = []
    with _open(path) as container:
        try:
            for index, frame in enumerate(container.decode(video=0)):
                if index in keep:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if index >= wanted[-1]:
                    break
        except av.error.FFmpegError as exc:
            raise ImageInputError(f"cannot decode video {path}: {exc}") from exc
    if len(frames) != len(wanted):
        raise ImageInputError(f"{path}: decoded {len(frames)} of the {len(wanted)} sampled frames")
    return frames, wanted
