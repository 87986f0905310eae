"""Video files <-> uint8 RGB frames, with PyAV.

``av`` is imported inside the functions only, so importing :mod:`shared` never needs it.

Frame sampling needs the frame count up front; it is read from the container's metadata, or,
when the container has none (e.g. WebM), by demuxing packets without decoding them. Frames are
then decoded sequentially and only the sampled ones are kept, so a long video never sits in
memory whole. If the metadata overstated the count, :func:`decode_video` decodes once more with
the true count and :func:`iter_video_clips` pads its last clips with the last frame.

Errors are :class:`~shared.codec.ClipDecodeError`: 415 when the bytes are not a video container
PyAV can open, 422 when the container holds no video stream, no frames or a corrupt stream, and
413 when a frame has more pixels than allowed (checked from the stream header before decoding).
"""

from __future__ import annotations

import io
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from shared.codec import ClipDecodeError

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

__all__ = [
    "DEFAULT_MAX_FRAMES_READ",
    "DEFAULT_MAX_PIXELS",
    "decode_video",
    "encode_mp4",
    "iter_video_clips",
]

#: Frames decoded at most from one video (longer videos are sampled from their start).
DEFAULT_MAX_FRAMES_READ: Final = 4096
#: Largest frame accepted, in pixels (width x height): 1024 x 1024 like ``ClipLimits``.
DEFAULT_MAX_PIXELS: Final = 1024 * 1024


@contextmanager
def _open_video(
    source: bytes | Path, *, max_pixels: int
) -> Iterator[tuple[InputContainer, VideoStream]]:
    """Open ``source`` and yield (container, first video stream), mapping failures to errors."""
    import av

    target: io.BytesIO | str = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        container = av.open(target, mode="r")
    except FileNotFoundError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise ClipDecodeError(f"not a decodable video: {_av_reason(exc)}", status=415) from None
    try:
        if not container.streams.video:
            raise ClipDecodeError("the file has no video stream", status=422)
        stream = container.streams.video[0]
        _check_pixels(stream.codec_context.width, stream.codec_context.height, max_pixels)
        # No frame threading: on small clips its hand-offs cost more than decoding (measured
        # ~10x slower frame conversion with thread_type="AUTO" on 2 cores).
        yield container, stream
    finally:
        container.close()


def _av_reason(exc: BaseException) -> str:
    # FFmpegError's str() carries errno and the (meaningless here) file name; keep the message.
    return str(getattr(exc, "strerror", None) or exc)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ClipDecodeError(
            f"frame size {width}x{height} ({width * height} pixels) is over the limit of "
            f"{max_pixels} pixels",
            status=413,
        )


def _frame_count(source: bytes | Path, *, max_pixels: int, cap: int) -> int:
    """Frames in the video (at most ``cap``): metadata if present, else a packet count."""
    with _open_video(source, max_pixels=max_pixels) as (container, stream):
        if stream.frames > 0:
            return min(int(stream.frames), cap)
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
                    if count >= cap:
                        break
        except Exception as exc:
            raise ClipDecodeError(f"corrupt video stream: {_av_reason(exc)}", status=422) from None
        return count


def _decode_frames(
    source: bytes | Path, *, wanted: set[int], stop: int, max_pixels: int
) -> Iterator[tuple[int, np.ndarray | None]]:
    """Yield ``(index, rgb or None)`` for frames ``0 .. stop-1``; only ``wanted`` are converted."""
    with _open_video(source, max_pixels=max_pixels) as (container, stream):
        index = 0
        try:
            for frame in container.decode(stream):
                if index >= stop:
                    return
                _check_pixels(frame.width, frame.height, max_pixels)
                rgb = frame.to_ndarray(format="rgb24") if index in wanted else None
                yield index, rgb
                index += 1
        except ClipDecodeError:
            raise
        except Exception as exc:  # PyAV raises FFmpegError subclasses, some also ValueError
            if index == 0:
                raise ClipDecodeError(
                    f"corrupt video stream: {_av_reason(exc)}", status=422
                ) from None
            # A damaged tail: keep the frames decoded so far, as players do.
            return


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    if not frames:
        raise ClipDecodeError("the video has no frames", status=422)
    try:
        return np.stack(frames)
    except ValueError:
        sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
        raise ClipDecodeError(
            f"frame size changes within the video ({', '.join(sizes)})", status=422
        ) from None


def _sample(source: bytes | Path, total: int, frames: int, max_pixels: int) -> list[np.ndarray]:
    indices = np.linspace(0, total - 1, frames).round().astype(int).tolist()
    wanted = set(indices)
    kept: dict[int, np.ndarray] = {}
    for index, rgb in _decode_frames(
        source, wanted=wanted, stop=max(wanted) + 1, max_pixels=max_pixels
    ):
        if rgb is not None:
            kept[index] = rgb
    if len(kept) < len(wanted):
        return []
    return [kept[i] for i in indices]


def decode_video(
    data: bytes | Path,
    *,
    frames: int | None = None,
    max_frames_read: int = DEFAULT_MAX_FRAMES_READ,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode a video file (bytes or path) to uint8 RGB frames ``(T, H, W, 3)``.

    With ``frames=None`` every frame is returned, up to the first ``max_frames_read`` (all held
    in memory: pass a bound that fits, e.g. ``max_frames_read * max_pixels * 3`` bytes). With
    ``frames=k``, ``k`` frames are sampled uniformly (``np.linspace`` over the frame indices,
    repeating frames when the video is shorter than ``k``) from the first ``max_frames_read``.
    """
    if frames is not None and frames < 1:
        raise ValueError("frames must be >= 1 or None")
    if max_frames_read < 1:
        raise ValueError("max_frames_read must be >= 1")
    if frames is None:
        decoded = [
            rgb
            for _, rgb in _decode_frames(
                data,
                wanted=set(range(max_frames_read)),
                stop=max_frames_read,
                max_pixels=max_pixels,
            )
            if rgb is not None
        ]
        if not decoded:
            raise ClipDecodeError("the video has no frames", status=422)
        return _stack(decoded)
    total = _frame_count(data, max_pixels=max_pixels, cap=max_frames_read)
    sampled = _sample(data, total, frames, max_pixels) if total else []
    if not sampled:
        # Metadata overstated the frame count (or there was none): count by decoding, then redo.
        total = sum(
            1
            for _ in _decode_frames(data, wanted=set(), stop=max_frames_read, max_pixels=max_pixels)
        )
        if total == 0:
            raise ClipDecodeError("the video has no frames", status=422)
        sampled = _sample(data, total, frames, max_pixels)
    return _stack(sampled)


def encode_mp4(frames: np.ndarray, *, fps: int = 15, crf: int = 18) -> bytes:
    """Encode uint8 RGB frames ``(T, H, W, 3)`` as H.264 (yuv420p) MP4, in memory.

    yuv420p needs even sizes: an odd height or width is padded by repeating the last row or
    column, so decoding gives back ``H + H % 2`` by ``W + W % 2``.
    """
    import av

    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError("encode_mp4 expects a uint8 array (T, H, W, 3)")
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"encode_mp4 expects shape (T, H, W, 3), got {frames.shape}")
    if fps < 1:
        raise ValueError("fps must be >= 1")
    _, height, width, _ = frames.shape
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    if any(after for _, after in pad):
        frames = np.pad(frames, pad, mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _clip_starts(total: int, clip_len: int, clips_per_video: int) -> tuple[int, list[int]]:
    """(frame stride inside a clip, distinct clip start frames) spreading clips over the video."""
    stride = max(1, total // (clip_len * clips_per_video))
    span = (clip_len - 1) * stride + 1
    last_start = max(0, total - span)
    starts = np.linspace(0, last_start, clips_per_video).round().astype(int)
    return stride, sorted(set(starts.tolist()))


def iter_video_clips(
    path: Path,
    *,
    clip_len: int,
    clips_per_video: int,
    max_frames_read: int = DEFAULT_MAX_FRAMES_READ,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Generator[np.ndarray, None, None]:
    """Yield up to ``clips_per_video`` clips ``(clip_len, H, W, 3)`` spread evenly over a video.

    The frame stride inside a clip is ``total // (clip_len * clips_per_video)`` (at least 1), so
    the clips together span the video; their starts are evenly spaced. Clips that would be
    identical (a short video) are yielded once, and a video shorter than one clip yields one
    clip padded by repeating its last frame. Decoding is one sequential pass that keeps only
    frames a pending clip still needs, and each clip is yielded as soon as it is complete;
    ``close()`` the generator to release the file early.
    """
    if clip_len < 1 or clips_per_video < 1:
        raise ValueError("clip_len and clips_per_video must be >= 1")
    total = _frame_count(path, max_pixels=max_pixels, cap=max_frames_read)
    if total == 0:
        raise ClipDecodeError("the video has no frames", status=422)
    stride, starts = _clip_starts(total, clip_len, clips_per_video)
    plans = [[min(start + j * stride, total - 1) for j in range(clip_len)] for start in starts]
    needed: dict[int, int] = {}  # frame index -> number of pending clips that use it
    for plan in plans:
        for index in set(plan):
            needed[index] = needed.get(index, 0) + 1
    kept: dict[int, np.ndarray] = {}
    last: np.ndarray | None = None
    next_plan = 0
    for index, rgb in _decode_frames(path, wanted=set(needed), stop=total, max_pixels=max_pixels):
        if rgb is None:
            continue
        kept[index] = last = rgb
        while next_plan < len(plans) and plans[next_plan][-1] <= index:
            yield _take(plans[next_plan], kept, needed)
            next_plan += 1
    # The stream ended before the metadata said it would: pad what is left with the last frame.
    if last is not None:
        for plan in plans[next_plan:]:
            if plan[0] in kept:
                fill = {i: kept.get(i, last) for i in plan}
                yield _stack([fill[i] for i in plan])


def _take(plan: list[int], kept: dict[int, np.ndarray], needed: dict[int, int]) -> np.ndarray:
    clip = _stack([kept[i] for i in plan])
    for index in set(plan):
        needed[index] -= 1
        if needed[index] == 0:
            del needed[index]
            kept.pop(index, None)
    return clip
