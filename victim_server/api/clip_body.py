"""Read a classify request body within its size limit and decode it to uint8 clips.

Accepted: ``application/x-npy``, raw bytes + ``X-Clip-Shape``, ``application/json`` (base64 or
nested lists), a video file (``video/*``, decoded with PyAV and sampled to the model's clip
length), or ``multipart/form-data`` with one video or ``.npy`` per file part. Binary bodies may
carry ``Content-Encoding: zstd|gzip``; decompression stops at the decoded-size limit.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import numpy as np
from fastapi import Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from shared.codec import (
    DEFAULT_MAX_JSON_PARSE_BYTES,
    JSON_CONTENT_TYPE,
    NPY_CONTENT_TYPE,
    RAW_CONTENT_TYPE,
    RAW_SHAPE_HEADER,
    ClipDecodeError,
    ClipLimits,
    decode_json_body,
    decode_npy,
    decode_raw,
    decoded_size_bound,
    decompress_bounded,
)
from shared.video import decode_video

ACCEPTED_CONTENT_TYPES = [
    NPY_CONTENT_TYPE,
    f"{RAW_CONTENT_TYPE} (+ {RAW_SHAPE_HEADER})",
    JSON_CONTENT_TYPE,
    "video/* (mp4, webm, ...)",
    "multipart/form-data",
]


@dataclass(frozen=True)
class BodyLimits:
    max_body_bytes: int
    clips: ClipLimits
    model_frames: int
    max_video_frames: int
    max_video_pixels: int
    max_json_parse_bytes: int = DEFAULT_MAX_JSON_PARSE_BYTES


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refusing (413) a declared or actual size over ``max_bytes`` early.

    Over 8 MiB, the chunks are joined in a worker thread: ``bytes.join`` lets go of the GIL
    while it copies a large total, so a 64 MB body never stops the event loop for one copy."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ClipDecodeError("Content-Length is not a number", status=400) from None
        if size > max_bytes:
            raise ClipDecodeError(
                f"body of {size} bytes is over the {max_bytes}-byte limit", status=413
            )
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise ClipDecodeError(f"body is over the {max_bytes}-byte limit", status=413)
        chunks.append(chunk)
    if received == 0:
        raise ClipDecodeError(
            "empty body: send clips as .npy, raw bytes, JSON or video", status=400
        )
    if received <= _JOIN_ON_LOOP_BYTES:
        return b"".join(chunks)
    return await anyio.to_thread.run_sync(b"".join, chunks, limiter=_LIMITER)


# Below this a copy costs less than a worker-thread hop: 8 MiB copy in ~0.6 ms here, and a hop
# is two thread wake-ups (0.15-0.3 ms each on this VM) plus the worker's CPU. A 32-clip body of
# the embedded victim (1.5 MB) spent 0.8 ms decoding when it was joined and parsed in threads.
_JOIN_ON_LOOP_BYTES = 8 << 20


async def decode_body(body: bytes, headers: Headers, limits: BodyLimits) -> np.ndarray:
    """uint8 clips (N, T, H, W, 3) from a request body, or a ClipDecodeError saying why not.

    Decompression and parsing run in a worker thread (at most ``DECODE_THREADS`` bodies at a
    time), in slices short enough that the event loop keeps answering meanwhile."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if media_type.startswith("multipart/"):
        clips = await _decode_multipart(body, headers, limits)
    elif media_type.startswith("video/"):
        if encoding not in ("", "identity"):
            body = await _in_thread(decompress_bounded, body, encoding, limits)
        clips = (await _decode_videos([body], limits))[0][None]
    else:
        shape_header = headers.get(RAW_SHAPE_HEADER)
        args = (body, media_type, encoding, shape_header, limits)
        if _cheap_on_loop(body, media_type, encoding):
            clips = _decode_single(*args)
        else:
            clips = await anyio.to_thread.run_sync(_decode_single, *args, limiter=_LIMITER)
    if clips.shape[0] > limits.clips.max_clips:
        raise ClipDecodeError(
            f"{clips.shape[0]} clips in one request; the limit is {limits.clips.max_clips}",
            status=413,
        )
    return clips


# An uncompressed .npy or raw body is a header check and a zero-copy view (a Fortran-ordered
# .npy is one copy): on the loop it costs microseconds, a worker-thread hop (two thread
# wake-ups) costs more than that.
_DECODE_ON_LOOP_BYTES = _JOIN_ON_LOOP_BYTES


def _cheap_on_loop(body: bytes, media_type: str, encoding: str) -> bool:
    return (
        len(body) <= _DECODE_ON_LOOP_BYTES
        and encoding in ("", "identity")
        and media_type in (NPY_CONTENT_TYPE, RAW_CONTENT_TYPE)
    )


DECODE_THREADS = 2
_LIMITER = anyio.CapacityLimiter(DECODE_THREADS)


async def _in_thread(
    fn: Callable[..., bytes], body: bytes, encoding: str, limits: BodyLimits
) -> bytes:
    def run() -> bytes:
        return fn(body, encoding, max_output=limits.clips.max_decoded_bytes)

    return await anyio.to_thread.run_sync(run, limiter=_LIMITER)


def _decode_single(
    body: bytes, media_type: str, encoding: str, shape_header: str | None, limits: BodyLimits
) -> np.ndarray:
    """Runs in a worker thread (on the loop for small uncompressed binary bodies)."""
    if media_type not in (NPY_CONTENT_TYPE, RAW_CONTENT_TYPE, JSON_CONTENT_TYPE):
        raise ClipDecodeError(
            f"unsupported content type {media_type or '(none)'!r}; use one of "
            + ", ".join(ACCEPTED_CONTENT_TYPES),
            status=415,
        )
    if encoding not in ("", "identity"):
        bound = decoded_size_bound(
            body,
            encoding,
            media_type,
            shape_header,
            limits=limits.clips,
            max_json_bytes=limits.max_body_bytes,
        )
        body = decompress_bounded(body, encoding, max_output=bound)
    if media_type == NPY_CONTENT_TYPE:
        return decode_npy(body, limits=limits.clips)
    if media_type == RAW_CONTENT_TYPE:
        return decode_raw(body, shape_header, limits=limits.clips)
    return decode_json_body(body, limits=limits.clips, max_parse_bytes=limits.max_json_parse_bytes)


async def _decode_videos(videos: list[bytes], limits: BodyLimits) -> list[np.ndarray]:
    """Decode in a worker thread (PyAV releases the GIL), one clip per video."""
    return await anyio.to_thread.run_sync(_decode_video_list, videos, limits, limiter=_LIMITER)


def _decode_video_list(videos: list[bytes], limits: BodyLimits) -> list[np.ndarray]:
    """Runs in a worker thread."""
    clips = [
        decode_video(
            video,
            frames=limits.model_frames,
            max_frames_read=limits.max_video_frames,
            max_pixels=limits.max_video_pixels,
        )
        for video in videos
    ]
    shapes = {clip.shape for clip in clips}
    if len(shapes) > 1:
        raise ClipDecodeError(
            f"videos in one request must share a frame size, got {sorted(shapes)}", status=422
        )
    return clips


# The multipart parser runs on the event loop: it is handed the body in slices this large, with
# a checkpoint between them, so that no single boundary search or copy holds the loop for long.
_MULTIPART_SLICE = 1 << 20


async def _decode_multipart(body: bytes, headers: Headers, limits: BodyLimits) -> np.ndarray:
    async def stream() -> AsyncGenerator[bytes, None]:
        view = memoryview(body)
        for pos in range(0, len(view), _MULTIPART_SLICE):
            yield bytes(view[pos : pos + _MULTIPART_SLICE])
            await anyio.lowlevel.checkpoint()

    parser = MultiPartParser(
        headers,
        stream(),
        max_files=limits.clips.max_clips,
        max_fields=16,
        max_part_size=limits.max_body_bytes,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ClipDecodeError(f"bad multipart body: {exc.message}", status=400) from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise ClipDecodeError("multipart body has no file parts", status=422)
    parts: list[tuple[bool, bytes]] = []  # (is .npy, data)
    for upload in files:
        part_type = (upload.content_type or "").split(";")[0].strip().lower()
        is_npy = part_type == NPY_CONTENT_TYPE or (upload.filename or "").endswith(".npy")
        parts.append((is_npy, await upload.read()))
    await form.close()
    return await anyio.to_thread.run_sync(_clips_from_parts, parts, limits, limiter=_LIMITER)


def _clips_from_parts(parts: list[tuple[bool, bytes]], limits: BodyLimits) -> np.ndarray:
    """Runs in a worker thread: decodes the file parts and joins them into one batch."""
    arrays = [decode_npy(data, limits=limits.clips) for is_npy, data in parts if is_npy]
    videos = [data for is_npy, data in parts if not is_npy]
    if videos:
        arrays.append(np.stack(_decode_video_list(videos, limits)))
    if len({a.shape[1:] for a in arrays}) > 1:
        raise ClipDecodeError("file parts decode to clips of different shapes", status=422)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
