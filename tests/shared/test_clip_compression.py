"""Bounded decompression of request bodies (Content-Encoding zstd / gzip)."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Literal

import numpy as np
import pytest
import zstandard

from shared.codec import (
    ClipDecodeError,
    ClipLimits,
    compress,
    decode_npy,
    decompress_bounded,
    encode_npy,
)

MiB = 1 << 20
ZEROS = bytes(MiB)


def _zstd_stream(total_mib: int) -> bytes:
    """zstd of ``total_mib`` MiB of zeros, written in chunks so no size is declared."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [compressor.compress(ZEROS) for _ in range(total_mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


def _gzip_stream(total_mib: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(ZEROS) for _ in range(total_mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    bomb = _zstd_stream(64)  # ~2 KB that expand to 64 MiB
    assert len(bomb) < 4096
    assert zstandard.frame_content_size(bomb) == -1  # forces the streaming path
    return bomb


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    bomb = _gzip_stream(16)  # ~16 KB that expand to 16 MiB
    assert len(bomb) < 32 * 1024
    return bomb


def reject(status: int, call: Callable[[], object], fragment: str = "") -> None:
    with pytest.raises(ClipDecodeError) as info:
        call()
    assert info.value.status == status, info.value.reason
    assert fragment in info.value.reason


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_round_trip(encoding: Literal["zstd", "gzip"]) -> None:
    data = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    packed = compress(data, encoding)
    assert packed != data
    assert decompress_bounded(packed, encoding, max_output=len(data)) == data


def test_compressed_npy_body_round_trip() -> None:
    clips = np.random.default_rng(2).integers(0, 256, (2, 4, 8, 8, 3), dtype=np.uint8)
    body = compress(encode_npy(clips), "zstd")
    limits = ClipLimits()
    raw = decompress_bounded(body, "zstd", max_output=limits.max_decoded_bytes)
    np.testing.assert_array_equal(decode_npy(raw, limits=limits), clips)


def test_gzip_output_is_standard_gzip() -> None:
    assert gzip.decompress(compress(b"hello" * 100, "gzip")) == b"hello" * 100


def test_encoding_names_are_case_insensitive_and_identity_passes_through() -> None:
    packed = compress(b"abc" * 50, "gzip")
    assert decompress_bounded(packed, " GZip ", max_output=150) == b"abc" * 50
    assert decompress_bounded(b"abc", "identity", max_output=3) == b"abc"
    reject(413, lambda: decompress_bounded(b"abcd", "identity", max_output=3))


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", ""])
def test_unknown_encoding_is_415(encoding: str) -> None:
    reject(415, lambda: decompress_bounded(b"xx", encoding, max_output=10), "encoding")


def test_compress_refuses_unknown_encoding() -> None:
    reject(415, lambda: compress(b"x", "br"))  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_limit_is_inclusive(encoding: Literal["zstd", "gzip"]) -> None:
    data = bytes(range(256)) * 40
    packed = compress(data, encoding)
    assert decompress_bounded(packed, encoding, max_output=len(data)) == data
    reject(413, lambda: decompress_bounded(packed, encoding, max_output=len(data) - 1))


def test_zstd_declared_size_over_limit_is_refused_from_the_frame_header() -> None:
    packed = compress(bytes(10 * MiB), "zstd")
    assert zstandard.frame_content_size(packed) == 10 * MiB
    reject(413, lambda: decompress_bounded(packed, "zstd", max_output=MiB), "over the limit")


@pytest.mark.parametrize("bomb_name", ["zstd_bomb", "gzip_bomb"])
def test_bomb_is_refused_without_allocating_its_output(
    bomb_name: str, request: pytest.FixtureRequest
) -> None:
    bomb: bytes = request.getfixturevalue(bomb_name)
    encoding = bomb_name.removesuffix("_bomb")
    tracemalloc.start()
    try:
        reject(413, lambda: decompress_bounded(bomb, encoding, max_output=MiB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The full output would be 16-64 MiB; the bounded reader stops a few MiB in at most.
    assert peak < 6 * MiB, peak


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_truncated_stream_is_400(encoding: Literal["zstd", "gzip"]) -> None:
    packed = compress(np.random.default_rng(3).bytes(50_000), encoding)
    reject(400, lambda: decompress_bounded(packed[:-8], encoding, max_output=MiB), "truncated")
    reject(400, lambda: decompress_bounded(b"", encoding, max_output=MiB))


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_trailing_bytes_are_400(encoding: Literal["zstd", "gzip"]) -> None:
    packed = compress(b"payload" * 100, encoding)
    reject(400, lambda: decompress_bounded(packed + b"junk", encoding, max_output=MiB), "trailing")


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_garbage_is_400(encoding: str) -> None:
    reject(400, lambda: decompress_bounded(b"definitely not compressed", encoding, max_output=MiB))


def test_gzip_with_corrupted_body_is_400() -> None:
    packed = bytearray(compress(np.random.default_rng(4).bytes(10_000), "gzip"))
    packed[20:40] = bytes(20)
    reject(400, lambda: decompress_bounded(bytes(packed), "gzip", max_output=MiB), "gzip")


class _RecordingInflater:
    """Wraps a zlib decompressor and records the size of every input it is handed."""

    def __init__(self, inner: zlib._Decompress, inputs: list[int]) -> None:
        self._inner = inner
        self._inputs = inputs

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        self._inputs.append(len(data))
        return self._inner.decompress(data, max_length)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_gzip_input_is_fed_in_bounded_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """zlib copies the unconsumed input on every output-bounded call. Fed the whole body, an
    incompressible 48 MB gzip body was copied once per 256 KiB of output (15 s holding the
    GIL); in 1 MiB slices each copy stays small."""
    payload = np.random.default_rng(5).bytes(6 * MiB)
    packed = compress(payload, "gzip")
    inputs: list[int] = []
    real = zlib.decompressobj
    monkeypatch.setattr(
        zlib, "decompressobj", lambda *a, **kw: _RecordingInflater(real(*a, **kw), inputs)
    )
    assert decompress_bounded(packed, "gzip", max_output=8 * MiB) == payload
    assert max(inputs) <= MiB
    # Linear: each slice is handed over once per 256 KiB of its output (whole: 12x here).
    assert sum(inputs) < 4 * len(packed)


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_trailing_bytes_after_a_multi_slice_stream_are_counted(
    encoding: Literal["zstd", "gzip"],
) -> None:
    packed = compress(np.random.default_rng(6).bytes(3 * MiB), encoding)
    reject(
        400,
        lambda: decompress_bounded(packed + b"x" * (2 * MiB), encoding, max_output=4 * MiB),
        f"{2 * MiB} trailing bytes",
    )
