"""Read a classify request body within its size limit and decode it to uint8 clips.

Accepted: ``application/x-npy``, raw bytes + ``X-Clip-Shape``, ``application/json`` (base64 or
nested lists), a video file (``video/*``, decoded with PyAV and sampled to the model's clip
length), or ``multipart/form-data`` with one video or ``.npy`` per file part. Binary bodies may
carry ``Content-Encoding: zstd|gzip``; decompression stops at the decoded-size limit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio
import numpy as np
from fastapi import Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from shared.codec import (
    JSON_CONTENT_TYPE,
    NPY_CONTENT_TYPE,
    RAW_CONTENT_TYPE,
    RAW_SHAPE_HEADER,
    ClipDecodeError,
    ClipLimits,
    decode_json,
    decode_npy,
    decode_raw,
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


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refusing (413) a declared or actual size over ``max_bytes`` early."""
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
    return b"".join(chunks)


async def decode_body(body: bytes, headers: Headers, limits: BodyLimits) -> np.ndarray:
    """uint8 clips (N, T, H, W, 3) from a request body, or a ClipDecodeError saying why not."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if media_type.startswith("multipart/"):
        clips = await _decode_multipart(body, headers, limits)
    else:
        if encoding not in ("", "identity"):
            body = decompress_bounded(body, encoding, max_output=limits.clips.max_decoded_bytes)
        clips = await _decode_single(body, media_type, headers.get(RAW_SHAPE_HEADER), limits)
    if clips.shape[0] > limits.clips.max_clips:
        raise ClipDecodeError(
            f"{clips.shape[0]} clips in one request; the limit is {limits.clips.max_clips}",
            status=413,
        )
    return clips


async def _decode_single(
    body: bytes, media_type: str, shape_header: str | None, limits: BodyLimits
) -> np.ndarray:
    if media_type == NPY_CONTENT_TYPE:
        return decode_npy(body, limits=limits.clips)
    if media_type == RAW_CONTENT_TYPE:
        return decode_raw(body, shape_header, limits=limits.clips)
    if media_type == JSON_CONTENT_TYPE:
        return decode_json(_parse_json(body), limits=limits.clips)
    if media_type.startswith("video/"):
        return (await _decode_videos([body], limits))[0][None]
    raise ClipDecodeError(
        f"unsupported content type {media_type or '(none)'!r}; use one of "
        + ", ".join(ACCEPTED_CONTENT_TYPES),
        status=415,
    )


def _parse_json(body: bytes) -> object:
    def refuse_constant(name: str) -> object:
        raise ClipDecodeError(
            f"JSON contains {name}; clip values must be integers 0..255", status=422
        )

    try:
        return json.loads(body, parse_constant=refuse_constant)
    except ClipDecodeError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClipDecodeError(f"body is not valid JSON: {exc}", status=400) from None


async def _decode_videos(videos: list[bytes], limits: BodyLimits) -> list[np.ndarray]:
    """Decode in a worker thread (PyAV releases the GIL), one clip per video."""

    def decode_all() -> list[np.ndarray]:
        return [
            decode_video(
                video,
                frames=limits.model_frames,
                max_frames_read=limits.max_video_frames,
                max_pixels=limits.max_video_pixels,
            )
            for video in videos
        ]

    clips = await anyio.to_thread.run_sync(decode_all)
    shapes = {clip.shape for clip in clips}
    if len(shapes) > 1:
        raise ClipDecodeError(
            f"videos in one request must share a frame size, got {sorted(shapes)}", status=422
        )
    return clips


async def _decode_multipart(body: bytes, headers: Headers, limits: BodyLimits) -> np.ndarray:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

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
    videos: list[bytes] = []
    arrays: list[np.ndarray] = []
    for upload in files:
        data = await upload.read()
        part_type = (upload.content_type or "").split(";")[0].strip().lower()
        if part_type == NPY_CONTENT_TYPE or (upload.filename or "").endswith(".npy"):
            arrays.append(decode_npy(data, limits=limits.clips))
        else:
            videos.append(data)
    await form.close()
    if videos:
        arrays.append(np.stack(await _decode_videos(videos, limits)))
    if len({a.shape[1:] for a in arrays}) > 1:
        raise ClipDecodeError("file parts decode to clips of different shapes", status=422)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
