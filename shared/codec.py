"""Clip-batch codec: the wire forms of a batch of clips, and their bounded decoders.

A batch is a ``uint8`` array shaped ``(N, T, H, W, 3)`` (N clips of T RGB frames). Three wire
forms carry it, none of which can carry a pickle:

- ``.npy`` (``application/x-npy``): :func:`encode_npy` / :func:`decode_npy`;
- raw C-order bytes plus an ``X-Clip-Shape: N,T,H,W,3`` header: :func:`encode_raw` /
  :func:`decode_raw`;
- JSON, either ``{"shape", "dtype", "data": base64}`` or ``{"clips": nested lists}``:
  :func:`encode_json` / :func:`decode_json`.

Any of the binary bodies may be compressed (``zstd`` or ``gzip``); :func:`decompress_bounded`
stops as soon as the output would pass a limit, so a small bomb never allocates its full size.

Decoders check the declared shape against :class:`ClipLimits` *before* allocating anything, and
return read-only arrays. Every rejection is a :class:`ClipDecodeError` whose ``status`` is the HTTP
status a server should answer with:

- 400: malformed, truncated or trailing bytes, bad base64, unparseable header or stream;
- 413: over a limit (clip count, frame count, frame size, decoded bytes, decompression bomb);
- 415: unsupported content type or content encoding;
- 422: well formed but wrong content (dtype, rank, shape, non-integers, values out of range).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

__all__ = [
    "DEFAULT_MAX_JSON_PARSE_BYTES",
    "JSON_CONTENT_TYPE",
    "NPY_CONTENT_TYPE",
    "RAW_CONTENT_TYPE",
    "RAW_SHAPE_HEADER",
    "SUPPORTED_ENCODINGS",
    "ClipDecodeError",
    "ClipLimits",
    "compress",
    "decode_json",
    "decode_json_body",
    "decode_npy",
    "decode_raw",
    "decoded_size_bound",
    "decompress_bounded",
    "decompress_prefix",
    "encode_json",
    "encode_npy",
    "encode_raw",
    "parse_json",
]

NPY_CONTENT_TYPE: Final = "application/x-npy"
RAW_CONTENT_TYPE: Final = "application/octet-stream"
RAW_SHAPE_HEADER: Final = "X-Clip-Shape"
JSON_CONTENT_TYPE: Final = "application/json"

#: Content encodings :func:`decompress_bounded` understands (``identity`` means "not compressed").
SUPPORTED_ENCODINGS: Final = ("zstd", "gzip", "identity")

_MiB: Final = 1 << 20
_CLIP_RANK: Final = 5
_CHANNELS: Final = 3
_UINT8: Final = np.dtype(np.uint8)
_DIM_NAMES: Final = ("N", "T", "H", "W", "C")
# Output chunk for streaming decompression; also the most a single step may overshoot a limit.
_CHUNK: Final = 256 * 1024
# zstd's worst expansion per compressed byte (an RLE block: 4 bytes -> 128 KiB), used to size the
# input slices fed to the decompressor so that one slice cannot expand far past the limit.
_ZSTD_MAX_RATIO: Final = 32 * 1024
_NPY_HEADER_PEEK: Final = 64 * 1024  # numpy writes headers of a few hundred bytes
_SHAPE_HEADER_RE: Final = re.compile(r"^\s*\d{1,10}\s*(?:,\s*\d{1,10}\s*){4}$")


class ClipDecodeError(ValueError):
    """A clip payload was refused.

    ``reason`` names what was wrong in words a client can act on; ``status`` is the HTTP status
    to answer with (400, 413, 415 or 422, see the module docstring).
    """

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"ClipDecodeError({self.reason!r}, status={self.status})"


@dataclass(frozen=True, slots=True)
class ClipLimits:
    """Upper bounds a decoder enforces before allocating a batch."""

    max_clips: int = 256
    max_frames: int = 512
    max_height: int = 1024
    max_width: int = 1024
    max_decoded_bytes: int = 256 * _MiB

    def __post_init__(self) -> None:
        for name in ("max_clips", "max_frames", "max_height", "max_width", "max_decoded_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClipLimits.{name} must be >= 1")


# --------------------------------------------------------------------------- shape checks


def _describe(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _check_shape(shape: Sequence[int], limits: ClipLimits | None) -> int:
    """Validate a declared batch shape; return its size in bytes. ``limits=None`` skips limits."""
    if len(shape) != _CLIP_RANK:
        raise ClipDecodeError(
            f"rank {len(shape)} (shape {_describe(shape)}), expected 5 dims (N, T, H, W, 3)",
            status=422,
        )
    if shape[-1] != _CHANNELS:
        raise ClipDecodeError(
            f"last dim {shape[-1]} (shape {_describe(shape)}), expected 3 (RGB)", status=422
        )
    for name, dim in zip(_DIM_NAMES, shape, strict=True):
        if dim <= 0:
            raise ClipDecodeError(
                f"dim {name} is {dim} (shape {_describe(shape)}), every dim must be >= 1",
                status=422,
            )
    total = math.prod(shape)
    if limits is None:
        return total
    n, t, h, w, _ = shape
    for name, dim, bound in (
        ("clip count N", n, limits.max_clips),
        ("frame count T", t, limits.max_frames),
        ("height H", h, limits.max_height),
        ("width W", w, limits.max_width),
    ):
        if dim > bound:
            raise ClipDecodeError(f"{name} {dim} is over the limit of {bound}", status=413)
    if total > limits.max_decoded_bytes:
        raise ClipDecodeError(
            f"decoded size {total} bytes is over the limit of {limits.max_decoded_bytes} bytes",
            status=413,
        )
    return total


def _as_clips(clips: np.ndarray) -> np.ndarray:
    """Encoder-side check: a C-contiguous uint8 (N, T, H, W, 3) array (copied only if needed)."""
    if not isinstance(clips, np.ndarray):
        raise ClipDecodeError(f"expected a numpy array, got {type(clips).__name__}", status=422)
    if clips.dtype != _UINT8:
        raise ClipDecodeError(f"dtype {clips.dtype}, expected uint8", status=422)
    _check_shape(clips.shape, None)
    return np.ascontiguousarray(clips)


def _view(buffer: bytes, shape: tuple[int, ...], *, offset: int = 0) -> np.ndarray:
    """A read-only uint8 view of ``buffer[offset:]`` with ``shape`` (no copy)."""
    array = np.frombuffer(buffer, dtype=np.uint8, count=math.prod(shape), offset=offset)
    array = array.reshape(shape)
    array.flags.writeable = False
    return array


def _check_length(actual: int, expected: int, what: str) -> None:
    if actual < expected:
        raise ClipDecodeError(
            f"{what} is truncated: {actual} bytes, the shape needs {expected}", status=400
        )
    if actual > expected:
        raise ClipDecodeError(
            f"{what} has {actual - expected} trailing bytes after the {expected} the shape needs",
            status=400,
        )


# --------------------------------------------------------------------------- .npy


def encode_npy(clips: np.ndarray) -> bytes:
    """Serialise a batch as ``.npy`` (format 1.0, C order, no pickle)."""
    array = _as_clips(clips)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes, *, limits: ClipLimits) -> np.ndarray:
    """Parse a ``.npy`` batch; the header is checked before any array memory is touched.

    Fortran-ordered payloads are accepted (``np.save`` writes them for F-contiguous arrays) and
    converted to C order with one copy; C-ordered payloads come back as a zero-copy read-only
    view of ``data``. Object dtypes (pickles) are refused from the header alone.
    """
    stream = io.BytesIO(data)
    shape, fortran_order = _read_npy_header(stream)
    nbytes = _check_shape(shape, limits)
    offset = stream.tell()
    _check_length(len(data) - offset, nbytes, ".npy payload")
    if not fortran_order:
        return _view(data, shape, offset=offset)
    flat = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=offset)
    array = np.ascontiguousarray(flat.reshape(shape, order="F"))
    array.flags.writeable = False
    return array


def _read_npy_header(stream: io.BytesIO) -> tuple[tuple[int, ...], bool]:
    """(shape, Fortran order) of the header at the stream's position; the stream is left at
    the payload. Parsed with numpy's own reader, once per distinct header: clients send the same
    few shapes, and the parse (an ``ast.literal_eval``) was most of a one-clip decode."""
    try:
        version = np.lib.format.read_magic(stream)
    except ValueError as exc:
        raise ClipDecodeError(f"not a .npy payload: {exc}", status=400) from None
    if version not in _NPY_LENGTH_BYTES:
        raise ClipDecodeError(
            f".npy format version {version[0]}.{version[1]} is not supported (use 1.0 or 2.0)",
            status=400,
        )
    length = stream.read(_NPY_LENGTH_BYTES[version])
    size = int.from_bytes(length, "little")
    if size > _NPY_MAX_HEADER_BYTES:  # numpy refuses it; not worth a cache entry
        return _parse_npy_header.__wrapped__(version, length + stream.read(size))
    return _parse_npy_header(version, length + stream.read(size))


_NPY_LENGTH_BYTES = {(1, 0): 2, (2, 0): 4}  # size of the header-length field per version
_NPY_MAX_HEADER_BYTES = 10_000  # numpy's own default limit (read_array_header_*)


@functools.lru_cache(maxsize=32)
def _parse_npy_header(version: tuple[int, int], header: bytes) -> tuple[tuple[int, ...], bool]:
    """``header``: the length field and the text after the magic string."""
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    try:
        shape, fortran_order, dtype = read(io.BytesIO(header))
    except (ValueError, SyntaxError, TypeError) as exc:
        raise ClipDecodeError(f"unparseable .npy header: {exc}", status=400) from None
    if dtype.hasobject:
        raise ClipDecodeError(
            f"dtype {dtype} (object/pickled payload) refused, expected uint8", status=422
        )
    if dtype != _UINT8:
        raise ClipDecodeError(f"dtype {dtype}, expected uint8", status=422)
    return tuple(int(d) for d in shape), bool(fortran_order)


def decoded_size_bound(
    body: bytes,
    encoding: str,
    media_type: str,
    shape_header: str | None,
    *,
    limits: ClipLimits,
    max_json_bytes: int,
) -> int:
    """The most a compressed body of ``media_type`` may decompress to, known before
    decompressing it: the exact size its ``.npy`` header or ``X-Clip-Shape`` declares (checked
    against ``limits`` first, so an oversized declaration is 413 at once), ``max_json_bytes``
    for JSON. A bomb is then refused at its declared size, not at ``max_decoded_bytes``."""
    if media_type == RAW_CONTENT_TYPE:
        return _check_shape(_parse_shape_header(shape_header), limits)
    if media_type == NPY_CONTENT_TYPE:
        prefix = decompress_prefix(body, encoding, _NPY_HEADER_PEEK)
        stream = io.BytesIO(prefix)
        shape, _ = _read_npy_header(stream)
        return stream.tell() + _check_shape(shape, limits)
    if media_type == JSON_CONTENT_TYPE:
        return max_json_bytes
    return limits.max_decoded_bytes


def decompress_prefix(data: bytes, encoding: str, size: int) -> bytes:
    """At most the first ``size`` decompressed bytes (fewer if the stream is shorter)."""
    name = encoding.strip().lower()
    try:
        if name == "gzip":  # a bounded input slice: the unconsumed tail is copied
            head = memoryview(data)[: 2 * size + _CHUNK]
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(head, size)
        if name == "zstd":
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
            return bytes(reader.read(size))
    except Exception as exc:  # zlib.error, zstandard.ZstdError (imported lazily)
        raise ClipDecodeError(f"corrupt {name} stream: {exc}", status=400) from None
    return decompress_bounded(data, encoding, max_output=len(data))[:size]


# --------------------------------------------------------------------------- raw + header


def encode_raw(clips: np.ndarray) -> tuple[bytes, str]:
    """Return ``(C-order bytes, X-Clip-Shape header value)``, e.g. ``"2,16,32,32,3"``."""
    array = _as_clips(clips)
    return array.tobytes(), ",".join(str(d) for d in array.shape)


def _parse_shape_header(value: str | None) -> tuple[int, ...]:
    if value is None or not value.strip():
        raise ClipDecodeError(f"missing {RAW_SHAPE_HEADER} header (e.g. '2,16,32,32,3')")
    if not _SHAPE_HEADER_RE.match(value):
        if len(value.split(",")) != _CLIP_RANK and all(
            part.strip().isdigit() for part in value.split(",")
        ):
            raise ClipDecodeError(
                f"{RAW_SHAPE_HEADER} {value[:64]!r} has rank {len(value.split(','))}, "
                "expected 5 dims N,T,H,W,3",
                status=422,
            )
        raise ClipDecodeError(
            f"malformed {RAW_SHAPE_HEADER} header {value[:64]!r}, expected 5 comma-separated "
            "non-negative integers like '2,16,32,32,3'",
            status=400,
        )
    return tuple(int(part) for part in value.split(","))


def decode_raw(data: bytes, shape_header: str | None, *, limits: ClipLimits) -> np.ndarray:
    """Decode raw C-order uint8 bytes shaped by the ``X-Clip-Shape`` header (zero copy)."""
    shape = _parse_shape_header(shape_header)
    nbytes = _check_shape(shape, limits)
    _check_length(len(data), nbytes, "raw payload")
    return _view(data, shape)


# --------------------------------------------------------------------------- JSON


def encode_json(clips: np.ndarray) -> dict[str, object]:
    """``{"shape": [N, T, H, W, 3], "dtype": "uint8", "data": base64(C-order bytes)}``."""
    array = _as_clips(clips)
    return {
        "shape": list(array.shape),
        "dtype": "uint8",
        "data": base64.b64encode(array.data).decode("ascii"),
    }


def decode_json(payload: object, *, limits: ClipLimits) -> np.ndarray:
    """Decode a parsed JSON body in either the base64 form or the nested-lists form.

    Base64 form: ``{"shape": [...], "dtype": "uint8", "data": "<standard base64>"}`` (``dtype``
    may be omitted). Lists form: ``{"clips": [[[[[r, g, b], ...]]]]}`` of integers 0..255.
    """
    if not isinstance(payload, Mapping):
        raise ClipDecodeError(
            f"JSON body must be an object, got {type(payload).__name__}", status=422
        )
    has_data, has_clips = "data" in payload, "clips" in payload
    if has_data and has_clips:
        raise ClipDecodeError("JSON body has both 'data' and 'clips'; send one", status=422)
    if has_data:
        return _decode_json_base64(payload, limits)
    if has_clips:
        return _decode_json_lists(payload["clips"], limits)
    raise ClipDecodeError(
        "JSON body needs 'shape' + 'data' (base64 uint8) or 'clips' (nested lists)", status=422
    )


#: JSON bodies up to this size are parsed whole; larger ones must use the base64 form, whose
#: ``data`` string is cut out and decoded in slices (bounded memory, no long GIL hold).
DEFAULT_MAX_JSON_PARSE_BYTES: Final = _MiB
# Work on large bodies is cut in slices of about this size, so that no single C call that holds
# the GIL (a search, a copy, a base64 decode) runs long enough to stall the event loop's thread.
_SCAN_SLICE: Final = _MiB
_DATA_KEY_RE: Final = re.compile(rb'"data"[ \t\r\n]*:[ \t\r\n]*"')
_B64_SLICE: Final = _MiB  # a multiple of 4 characters


def decode_json_body(
    body: bytes, *, limits: ClipLimits, max_parse_bytes: int = DEFAULT_MAX_JSON_PARSE_BYTES
) -> np.ndarray:
    """Clips from a raw JSON body, with bounded cost whatever the body holds.

    Bodies up to ``max_parse_bytes`` are parsed as JSON (either form). Larger bodies are
    accepted only in the base64 form: the ``data`` string is located and decoded in slices, and
    only the small rest is parsed as JSON. Deep nesting is 400, not a crash.
    """
    if len(body) <= max_parse_bytes:
        return decode_json(parse_json(body), limits=limits)
    too_big = ClipDecodeError(
        f"JSON bodies over {max_parse_bytes} bytes must use the base64 form "
        "({'shape', 'dtype', 'data'}); send nested 'clips' lists in smaller requests, or use "
        ".npy / raw bytes",
        status=413,
    )
    start, end = _json_data_string(body, search_limit=max_parse_bytes)
    if start < 0:
        raise too_big
    rest = bytes(body[:start]) + bytes(body[end:])
    if len(rest) > max_parse_bytes:
        raise too_big
    meta = parse_json(rest)
    if not isinstance(meta, Mapping) or "clips" in meta or meta.get("data") != "":
        raise too_big
    shape = _json_base64_shape(meta, limits)
    return _b64decode_sliced(memoryview(body)[start:end], shape)


def parse_json(body: bytes) -> object:
    """``json.loads`` with every failure a :class:`ClipDecodeError` (400; NaN/Infinity 422)."""

    def refuse_constant(name: str) -> object:
        raise ClipDecodeError(
            f"JSON contains {name}; clip values must be integers 0..255", status=422
        )

    try:
        return json.loads(body, parse_constant=refuse_constant)
    except ClipDecodeError:
        raise
    except RecursionError:
        raise ClipDecodeError("JSON is nested too deeply", status=400) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClipDecodeError(f"body is not valid JSON: {exc}", status=400) from None


def _json_data_string(body: bytes, *, search_limit: int) -> tuple[int, int]:
    """Byte range of the string value of the ``data`` key; (-1, -1) if none. The key is looked
    for in the first ``search_limit`` bytes only: all that precedes the string is part of the
    rest parsed as JSON, so a key found later would make the body too large anyway, and a
    64 MB body without one is refused without reading it all. The value may hold no escapes
    (base64 has none): the next quote ends it."""
    match = _DATA_KEY_RE.search(body, 0, search_limit)
    if match is None:
        return -1, -1
    close = _find_sliced(body, b'"', match.end())
    if close < 0:
        raise ClipDecodeError("body is not valid JSON: unterminated 'data' string", status=400)
    return match.end(), close


def _find_sliced(data: bytes, needle: bytes, start: int = 0) -> int:
    """``data.find(needle, start)`` one slice at a time: ``bytes.find`` holds the GIL, and over
    64 MB it would keep the event loop's thread waiting for the whole scan."""
    overlap = len(needle) - 1
    for pos in range(start, len(data), _SCAN_SLICE):
        found = data.find(needle, pos, pos + _SCAN_SLICE + overlap)
        if found >= 0:
            return found
    return -1


def _json_base64_shape(payload: Mapping[object, object], limits: ClipLimits) -> tuple[int, ...]:
    dtype = payload.get("dtype", "uint8")
    if dtype != "uint8":
        raise ClipDecodeError(f"dtype {dtype!s:.32}, expected uint8", status=422)
    raw_shape = payload.get("shape")
    if not isinstance(raw_shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in raw_shape
    ):
        raise ClipDecodeError(
            "'shape' must be a list of integers like [2, 16, 32, 32, 3]", status=422
        )
    shape = tuple(raw_shape)
    _check_shape(shape, limits)
    return shape


def _b64decode_sliced(text: memoryview, shape: tuple[int, ...]) -> np.ndarray:
    nbytes = math.prod(shape)
    expected_chars = 4 * math.ceil(nbytes / 3)
    if len(text) != expected_chars:
        raise ClipDecodeError(
            f"'data' has {len(text)} base64 characters, shape {_describe(shape)} needs "
            f"{expected_chars}",
            status=400,
        )
    # np.empty leaves the pages untouched (bytearray(n) would zero them all in one GIL hold);
    # the +2 is room for the last slice of a body whose padding decodes past nbytes.
    out = np.empty(nbytes + 2, dtype=np.uint8)
    written = 0
    try:
        for pos in range(0, len(text), _B64_SLICE):
            part = binascii.a2b_base64(text[pos : pos + _B64_SLICE], strict_mode=True)
            out[written : written + len(part)] = np.frombuffer(part, dtype=np.uint8)
            written += len(part)
    except (binascii.Error, ValueError) as exc:
        raise ClipDecodeError(f"'data' is not valid base64: {exc}", status=400) from None
    _check_length(written, nbytes, "'data'")
    array = out[:nbytes].reshape(shape)
    array.flags.writeable = False
    return array


def _decode_json_base64(payload: Mapping[object, object], limits: ClipLimits) -> np.ndarray:
    dtype = payload.get("dtype", "uint8")
    if dtype != "uint8":
        raise ClipDecodeError(f"dtype {dtype!s:.32}, expected uint8", status=422)
    raw_shape = payload.get("shape")
    if not isinstance(raw_shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in raw_shape
    ):
        raise ClipDecodeError(
            "'shape' must be a list of integers like [2, 16, 32, 32, 3]", status=422
        )
    shape = tuple(raw_shape)
    nbytes = _check_shape(shape, limits)
    text = payload["data"]
    if not isinstance(text, str):
        raise ClipDecodeError(
            f"'data' must be a base64 string, got {type(text).__name__}", status=422
        )
    # Length first, so an oversized string is refused before decoding it.
    expected_chars = 4 * math.ceil(nbytes / 3)
    if len(text) != expected_chars:
        raise ClipDecodeError(
            f"'data' has {len(text)} base64 characters, shape {_describe(shape)} needs "
            f"{expected_chars}",
            status=400,
        )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ClipDecodeError(f"'data' is not valid base64: {exc}", status=400) from None
    _check_length(len(raw), nbytes, "'data'")
    return _view(raw, shape)


def _nominal_shape(nested: object) -> tuple[int, ...]:
    """Shape read along the first element of each level; enough to check limits up front."""
    shape: list[int] = []
    node = nested
    while isinstance(node, list) and len(shape) <= _CLIP_RANK:
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    return tuple(shape)


def _decode_json_lists(nested: object, limits: ClipLimits) -> np.ndarray:
    if not isinstance(nested, list):
        raise ClipDecodeError("'clips' must be nested lists shaped N x T x H x W x 3", status=422)
    _check_shape(_nominal_shape(nested), limits)
    try:
        array = np.array(nested)
    except (ValueError, OverflowError) as exc:
        raise ClipDecodeError(
            f"'clips' lists are ragged or mixed (all clips, frames and rows must have equal "
            f"lengths): {exc}",
            status=422,
        ) from None
    _check_shape(array.shape, limits)
    kind = array.dtype.kind
    if kind == "f":
        if not np.isfinite(array).all():
            raise ClipDecodeError(
                "'clips' contains NaN or infinity, expected integers 0..255", status=422
            )
        raise ClipDecodeError("'clips' contains floats, expected integers 0..255", status=422)
    if kind == "b":
        raise ClipDecodeError("'clips' contains booleans, expected integers 0..255", status=422)
    if kind not in "iu":
        raise ClipDecodeError(
            "'clips' contains non-integer values (strings, nulls or out-of-range integers), "
            "expected integers 0..255",
            status=422,
        )
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise ClipDecodeError(
            f"'clips' values out of range [{low}, {high}], expected integers 0..255", status=422
        )
    result = array.astype(np.uint8)
    result.flags.writeable = False
    return result


# --------------------------------------------------------------------------- compression


def compress(data: bytes, encoding: Literal["zstd", "gzip"]) -> bytes:
    """Compress a body for ``Content-Encoding: zstd`` or ``gzip`` (one frame / one member)."""
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    if encoding == "gzip":
        import gzip

        return gzip.compress(data, compresslevel=6, mtime=0)
    raise ClipDecodeError(f"unsupported content encoding {encoding!r}", status=415)


def decompress_bounded(data: bytes, encoding: str, *, max_output: int) -> bytes:
    """Decompress ``data``, refusing (413) as soon as the output would pass ``max_output``.

    ``encoding`` is a ``Content-Encoding`` value: ``zstd``, ``gzip`` or ``identity``
    (case-insensitive); anything else is 415. Exactly one zstd frame or one gzip member is
    accepted: truncated streams and trailing bytes are 400. The output buffer never grows
    more than one step (at most about 2 MiB) past ``max_output``, whatever the ratio.
    """
    if max_output < 0:
        raise ValueError("max_output must be >= 0")
    name = encoding.strip().lower()
    if name == "identity":
        if len(data) > max_output:
            raise _too_large(max_output)
        return bytes(data)
    if name == "gzip":
        return _gunzip_bounded(data, max_output)
    if name == "zstd":
        return _unzstd_bounded(data, max_output)
    raise ClipDecodeError(
        f"unsupported content encoding {encoding[:32]!r}, expected one of "
        f"{', '.join(SUPPORTED_ENCODINGS)}",
        status=415,
    )


def _too_large(max_output: int) -> ClipDecodeError:
    return ClipDecodeError(f"decompressed body is over the limit of {max_output} bytes", status=413)


def _gunzip_bounded(data: bytes, max_output: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip container only
    parts: list[bytes] = []
    size = 0
    view = memoryview(data)
    pos = 0
    pending: bytes | memoryview = b""
    try:
        while not inflater.eof:
            if not pending:
                if pos >= len(view):
                    break
                # Input in slices: ``unconsumed_tail`` is a copy, so it must stay small.
                pending = view[pos : pos + _MiB]
                pos += _MiB
            # Ask for at most one byte past the limit: getting it proves the bomb.
            part = inflater.decompress(pending, min(_CHUNK, max_output - size + 1))
            parts.append(part)
            size += len(part)
            if size > max_output:
                raise _too_large(max_output)
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise ClipDecodeError(f"corrupt gzip stream: {exc}", status=400) from None
    if not inflater.eof:
        raise ClipDecodeError("truncated gzip stream", status=400)
    trailing = len(inflater.unused_data) + max(0, len(view) - pos)
    if trailing:
        raise ClipDecodeError(f"{trailing} trailing bytes after the gzip stream", status=400)
    return b"".join(parts)  # copies without the GIL (a bytearray -> bytes copy would hold it)


def _unzstd_bounded(data: bytes, max_output: int) -> bytes:
    import zstandard

    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise ClipDecodeError(f"corrupt zstd stream: {exc}", status=400) from None
    if declared > max_output:  # -1 when the frame does not declare its size
        raise _too_large(max_output)
    # zstandard's decompressobj has no output bound, so feed it input slices small enough that
    # even the worst expansion ratio cannot carry a single step far past the remaining room.
    inflater = zstandard.ZstdDecompressor().decompressobj()
    parts: list[bytes] = []
    size = 0
    view = memoryview(data)
    pos = 0
    try:
        while pos < len(view) and not inflater.eof:
            step = max(64, min(_MiB, (max_output - size) // _ZSTD_MAX_RATIO))
            part = inflater.decompress(view[pos : pos + step])
            parts.append(part)
            size += len(part)
            pos += step
            if size > max_output:
                raise _too_large(max_output)
    except zstandard.ZstdError as exc:
        raise ClipDecodeError(f"corrupt zstd stream: {exc}", status=400) from None
    if not inflater.eof:
        raise ClipDecodeError("truncated zstd stream", status=400)
    trailing = len(inflater.unused_data) + max(0, len(view) - pos)
    if trailing:
        raise ClipDecodeError(f"{trailing} trailing bytes after the zstd frame", status=400)
    return b"".join(parts)
