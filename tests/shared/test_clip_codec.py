"""The clip-batch wire forms: .npy, raw + shape header, JSON (base64 and nested lists)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shared.codec import (
    RAW_SHAPE_HEADER,
    ClipDecodeError,
    ClipLimits,
    decode_json,
    decode_json_body,
    decode_npy,
    decode_raw,
    encode_json,
    encode_npy,
    encode_raw,
)

LIMITS = ClipLimits()


def make_clips(shape: tuple[int, ...] = (2, 4, 8, 6, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def npy_bytes(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def reject(status: int, call: object, *fragments: str) -> ClipDecodeError:
    """Assert ``call()`` raises ClipDecodeError with ``status`` and every fragment in its reason."""
    assert callable(call)
    with pytest.raises(ClipDecodeError) as info:
        call()
    error = info.value
    assert error.status == status, error.reason
    for fragment in fragments:
        assert fragment in error.reason, error.reason
    return error


# --------------------------------------------------------------------------- limits


def test_limits_have_named_defaults() -> None:
    limits = ClipLimits()
    assert (limits.max_clips, limits.max_frames, limits.max_height, limits.max_width) == (
        256,
        512,
        1024,
        1024,
    )
    assert limits.max_decoded_bytes == 256 * 1024 * 1024
    with pytest.raises(ValueError, match="max_clips"):
        ClipLimits(max_clips=0)


def test_clip_decode_error_is_a_value_error_with_reason_and_status() -> None:
    error = ClipDecodeError("dtype float32, expected uint8", status=422)
    assert isinstance(error, ValueError)
    assert (error.reason, error.status) == ("dtype float32, expected uint8", 422)
    assert str(error) == "dtype float32, expected uint8"


# --------------------------------------------------------------------------- .npy


def test_npy_round_trip_is_a_read_only_zero_copy_view() -> None:
    clips = make_clips()
    data = encode_npy(clips)
    decoded = decode_npy(data, limits=LIMITS)
    np.testing.assert_array_equal(decoded, clips)
    assert decoded.dtype == np.uint8
    assert decoded.flags.c_contiguous
    assert not decoded.flags.writeable
    assert not decoded.flags.owndata  # a view of ``data``, not a copy


def test_npy_encoder_writes_plain_npy() -> None:
    clips = make_clips()
    np.testing.assert_array_equal(np.load(io.BytesIO(encode_npy(clips))), clips)


def test_npy_fortran_order_is_accepted_and_returned_in_c_order() -> None:
    clips = make_clips()
    data = npy_bytes(np.asfortranarray(clips))
    assert b"'fortran_order': True" in data[:128]
    decoded = decode_npy(data, limits=LIMITS)
    np.testing.assert_array_equal(decoded, clips)
    assert decoded.flags.c_contiguous
    assert not decoded.flags.writeable


def test_npy_version_2_header_is_accepted() -> None:
    clips = make_clips()
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, clips, version=(2, 0))
    np.testing.assert_array_equal(decode_npy(buffer.getvalue(), limits=LIMITS), clips)


def test_npy_wrong_dtype_is_422_naming_the_dtype() -> None:
    data = npy_bytes(make_clips().astype(np.float32))
    reject(422, lambda: decode_npy(data, limits=LIMITS), "float32", "uint8")


def test_npy_wrong_rank_is_422() -> None:
    data = npy_bytes(make_clips()[0])
    reject(422, lambda: decode_npy(data, limits=LIMITS), "rank 4")


def test_npy_last_dim_4_is_422() -> None:
    data = npy_bytes(np.zeros((1, 2, 4, 4, 4), np.uint8))
    reject(422, lambda: decode_npy(data, limits=LIMITS), "last dim 4")


def test_npy_zero_dim_is_422() -> None:
    data = npy_bytes(np.zeros((1, 0, 4, 4, 3), np.uint8))
    reject(422, lambda: decode_npy(data, limits=LIMITS), "dim T is 0")


def test_npy_truncated_payload_is_400() -> None:
    data = encode_npy(make_clips())
    reject(400, lambda: decode_npy(data[:-1], limits=LIMITS), "truncated")


def test_npy_trailing_bytes_are_400() -> None:
    data = encode_npy(make_clips())
    reject(400, lambda: decode_npy(data + b"\x00\x00", limits=LIMITS), "2 trailing bytes")


class _Trap:
    """Unpickling this would call ``_sprung``; the decoder must never get that far."""

    sprung = False

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_sprung, ())


def _sprung() -> None:
    _Trap.sprung = True


def test_npy_object_array_pickle_is_refused_without_unpickling() -> None:
    payload = np.empty((1, 1, 1, 1, 3), dtype=object)
    payload[...] = _Trap()
    data = npy_bytes(payload, allow_pickle=True)
    reject(422, lambda: decode_npy(data, limits=LIMITS), "object")
    assert not _Trap.sprung


@pytest.mark.parametrize(
    "data", [b"", b"not an npy file at all", b"\x93NUMPY\x01\x00\xff\xff{garbage"]
)
def test_npy_garbage_is_400(data: bytes) -> None:
    reject(400, lambda: decode_npy(data, limits=LIMITS))


def test_npy_unsupported_version_is_400() -> None:
    data = bytearray(encode_npy(make_clips()))
    data[6:8] = b"\x09\x00"
    reject(400, lambda: decode_npy(bytes(data), limits=LIMITS), "version 9.0")


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((257, 1, 1, 1, 3), "clip count N 257"),
        ((1, 513, 1, 1, 3), "frame count T 513"),
        ((1, 1, 1025, 1, 3), "height H 1025"),
        ((1, 1, 1, 1025, 3), "width W 1025"),
        ((256, 512, 1024, 1024, 3), "decoded size"),
    ],
)
def test_npy_over_limits_is_413_from_the_header_alone(
    shape: tuple[int, ...], fragment: str
) -> None:
    # No payload at all: the shape must be refused before the length is even looked at.
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    header = buffer.getvalue()
    reject(413, lambda: decode_npy(header, limits=LIMITS), fragment)


def test_npy_small_limits_are_enforced() -> None:
    data = encode_npy(make_clips((3, 2, 4, 4, 3)))
    reject(413, lambda: decode_npy(data, limits=ClipLimits(max_clips=2)), "N 3")
    reject(413, lambda: decode_npy(data, limits=ClipLimits(max_decoded_bytes=100)), "decoded")
    decode_npy(data, limits=ClipLimits(max_clips=3, max_decoded_bytes=3 * 2 * 4 * 4 * 3))


def test_encoders_refuse_non_clip_arrays() -> None:
    with pytest.raises(ValueError, match="float64"):
        encode_npy(np.zeros((1, 1, 1, 1, 3)))
    with pytest.raises(ValueError, match="rank 4"):
        encode_raw(np.zeros((1, 1, 1, 3), np.uint8))
    with pytest.raises(ValueError, match="last dim"):
        encode_json(np.zeros((1, 1, 1, 1, 1), np.uint8))


# --------------------------------------------------------------------------- raw


def test_raw_round_trip_and_header_format() -> None:
    clips = make_clips((2, 16, 32, 32, 3))
    data, header = encode_raw(clips)
    assert header == "2,16,32,32,3"
    assert RAW_SHAPE_HEADER == "X-Clip-Shape"
    assert data == clips.tobytes()
    decoded = decode_raw(data, header, limits=LIMITS)
    np.testing.assert_array_equal(decoded, clips)
    assert not decoded.flags.writeable
    assert not decoded.flags.owndata


def test_raw_encodes_non_contiguous_input_in_c_order() -> None:
    clips = make_clips((2, 4, 6, 6, 3))[:, ::2, :, ::-1]
    data, header = encode_raw(clips)
    np.testing.assert_array_equal(decode_raw(data, header, limits=LIMITS), clips)


def test_raw_header_tolerates_spaces() -> None:
    clips = make_clips((1, 2, 2, 2, 3))
    data, _ = encode_raw(clips)
    np.testing.assert_array_equal(decode_raw(data, " 1, 2,2 ,2,3 ", limits=LIMITS), clips)


@pytest.mark.parametrize("header", [None, "", "  "])
def test_raw_missing_header_is_400(header: str | None) -> None:
    reject(400, lambda: decode_raw(b"\x00" * 12, header, limits=LIMITS), "missing X-Clip-Shape")


@pytest.mark.parametrize(
    "header", ["a,b,c,d,e", "1;2;2;1;3", "1,2,2,-1,3", "1.0,2,2,1,3", "1_0,1,1,1,3"]
)
def test_raw_malformed_header_is_400(header: str) -> None:
    reject(400, lambda: decode_raw(b"\x00" * 12, header, limits=LIMITS), "malformed")


def test_raw_wrong_rank_header_is_422() -> None:
    reject(422, lambda: decode_raw(b"\x00" * 12, "2,2,3", limits=LIMITS), "rank 3")


def test_raw_shape_checks() -> None:
    reject(422, lambda: decode_raw(b"\x00" * 16, "1,1,2,2,4", limits=LIMITS), "last dim 4")
    reject(422, lambda: decode_raw(b"", "0,1,2,2,3", limits=LIMITS), "dim N is 0")
    reject(413, lambda: decode_raw(b"", "1000,1,2,2,3", limits=LIMITS), "clip count")


def test_raw_length_mismatch_is_400() -> None:
    data, header = encode_raw(make_clips())
    reject(400, lambda: decode_raw(data[:-3], header, limits=LIMITS), "truncated")
    reject(400, lambda: decode_raw(data + b"x", header, limits=LIMITS), "1 trailing bytes")


# --------------------------------------------------------------------------- JSON


def test_json_base64_round_trip_through_real_json() -> None:
    clips = make_clips()
    payload = encode_json(clips)
    assert payload["shape"] == list(clips.shape)
    assert payload["dtype"] == "uint8"
    assert base64.b64decode(str(payload["data"])) == clips.tobytes()
    decoded = decode_json(json.loads(json.dumps(payload)), limits=LIMITS)
    np.testing.assert_array_equal(decoded, clips)
    assert not decoded.flags.writeable


def test_json_base64_dtype_may_be_omitted() -> None:
    clips = make_clips()
    payload = encode_json(clips)
    del payload["dtype"]
    np.testing.assert_array_equal(decode_json(payload, limits=LIMITS), clips)


def test_json_nested_lists_round_trip() -> None:
    clips = make_clips((2, 3, 4, 5, 3))
    decoded = decode_json(json.loads(json.dumps({"clips": clips.tolist()})), limits=LIMITS)
    np.testing.assert_array_equal(decoded, clips)
    assert decoded.dtype == np.uint8
    assert not decoded.flags.writeable


def _one_clip_lists() -> list[object]:
    return np.zeros((1, 1, 1, 2, 3), np.uint8).tolist()


def _with_leaf(value: object) -> dict[str, object]:
    clips = _one_clip_lists()
    clips[0][0][0][1][2] = value  # type: ignore[index]
    return {"clips": clips}


@pytest.mark.parametrize(
    ("leaf", "fragment"),
    [
        (float("nan"), "NaN or infinity"),
        (float("inf"), "NaN or infinity"),
        (float("-inf"), "NaN or infinity"),
        (1.5, "floats"),
        (2.0, "floats"),
        (256, "out of range [0, 256]"),
        (-1, "out of range [-1, 0]"),
        (2**70, "non-integer"),
        ("7", "non-integer"),
        (None, "non-integer"),
    ],
)
def test_json_lists_bad_values_are_422(leaf: object, fragment: str) -> None:
    payload = _with_leaf(leaf)
    reject(422, lambda: decode_json(payload, limits=LIMITS), fragment)


def test_json_nan_as_parsed_from_json_text_is_422() -> None:
    payload = json.loads('{"clips": [[[[[0, 0, NaN]]]]]}')
    reject(422, lambda: decode_json(payload, limits=LIMITS), "NaN")


def test_json_lists_all_booleans_are_422() -> None:
    payload = {"clips": np.ones((1, 1, 1, 1, 3), bool).tolist()}
    reject(422, lambda: decode_json(payload, limits=LIMITS), "booleans")


def test_json_ragged_lists_are_422() -> None:
    clips = np.zeros((1, 2, 2, 2, 3), np.uint8).tolist()
    clips[0][1][1].pop()  # one row is a pixel short
    reject(422, lambda: decode_json({"clips": clips}, limits=LIMITS), "ragged")


def test_json_lists_wrong_rank_and_channels_are_422() -> None:
    rank4 = {"clips": np.zeros((1, 2, 2, 3), np.uint8).tolist()}
    reject(422, lambda: decode_json(rank4, limits=LIMITS), "rank 4")
    rgba = {"clips": np.zeros((1, 1, 2, 2, 4), np.uint8).tolist()}
    reject(422, lambda: decode_json(rgba, limits=LIMITS), "last dim 4")
    reject(422, lambda: decode_json({"clips": "abc"}, limits=LIMITS), "nested lists")
    reject(422, lambda: decode_json({"clips": []}, limits=LIMITS), "rank 1")


def test_json_lists_over_limits_are_413_before_building_an_array() -> None:
    clip = np.zeros((1, 1, 1, 3), np.uint8).tolist()
    payload = {"clips": [clip] * 300}  # shares one inner list: cheap to build, N = 300
    reject(413, lambda: decode_json(payload, limits=LIMITS), "clip count N 300")


def test_json_bad_base64_is_400() -> None:
    payload = encode_json(make_clips((1, 1, 1, 1, 3)))  # 3 bytes -> 4 base64 characters
    payload["data"] = "!@#$"
    reject(400, lambda: decode_json(payload, limits=LIMITS), "base64")


def test_json_base64_length_mismatch_is_400() -> None:
    payload = encode_json(make_clips((1, 1, 1, 2, 3)))
    payload["data"] = base64.b64encode(b"\x00" * 3).decode()
    reject(400, lambda: decode_json(payload, limits=LIMITS), "base64 characters")


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ([1, 2, 3], 422, "must be an object"),
        ({}, 422, "needs"),
        ({"data": "", "clips": []}, 422, "both"),
        ({"shape": [1, 1, 1, 1, 3], "dtype": "float32", "data": "AAAA"}, 422, "dtype float32"),
        ({"shape": "1,1,1,1,3", "data": "AAAA"}, 422, "'shape'"),
        ({"shape": [1, 1, 1, 1, True], "data": "AAAA"}, 422, "'shape'"),
        ({"shape": [1, 1, 1, 1, 3], "data": 123}, 422, "base64 string"),
        ({"shape": [1, 1, 1, 1, 4], "data": "AAAA"}, 422, "last dim"),
        ({"shape": [999, 1, 1, 1, 3], "data": "AAAA"}, 413, "clip count"),
    ],
)
def test_json_structural_errors(payload: object, status: int, fragment: str) -> None:
    reject(status, lambda: decode_json(payload, limits=LIMITS), fragment)


# --------------------------------------------------------------------------- property


clip_batches = arrays(
    dtype=np.uint8,
    shape=st.tuples(
        st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.just(3)
    ),
)


@settings(max_examples=40, deadline=None)
@given(clips=clip_batches)
def test_every_wire_form_round_trips(clips: np.ndarray) -> None:
    np.testing.assert_array_equal(decode_npy(encode_npy(clips), limits=LIMITS), clips)
    data, header = encode_raw(clips)
    np.testing.assert_array_equal(decode_raw(data, header, limits=LIMITS), clips)
    as_text = json.loads(json.dumps(encode_json(clips)))
    np.testing.assert_array_equal(decode_json(as_text, limits=LIMITS), clips)
    np.testing.assert_array_equal(decode_json({"clips": clips.tolist()}, limits=LIMITS), clips)


# --------------------------------------------------------------------------- bounded JSON bodies


def _b64_body(clips: np.ndarray, *, spaced: bool = False) -> bytes:
    payload = encode_json(clips)
    sep = (", ", ": ") if spaced else (",", ":")
    return json.dumps(payload, separators=sep).encode()


def test_json_body_deep_nesting_is_a_400_not_a_crash() -> None:
    body = b'{"clips":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ClipDecodeError) as caught:
        decode_json_body(body, limits=ClipLimits(), max_parse_bytes=len(body) + 1)
    assert caught.value.status == 400


@pytest.mark.parametrize("spaced", [False, True])
def test_large_json_bodies_decode_in_the_base64_form(spaced: bool) -> None:
    clips = np.random.default_rng(0).integers(0, 256, (3, 4, 8, 8, 3), dtype=np.uint8)
    body = _b64_body(clips, spaced=spaced)
    small = decode_json_body(body, limits=ClipLimits(), max_parse_bytes=len(body))
    large = decode_json_body(body, limits=ClipLimits(), max_parse_bytes=64)
    np.testing.assert_array_equal(small, clips)
    np.testing.assert_array_equal(large, clips)


def test_large_json_bodies_in_the_lists_form_are_413_before_parsing() -> None:
    body = json.dumps({"clips": np.zeros((2, 4, 8, 8, 3), np.uint8).tolist()}).encode()
    with pytest.raises(ClipDecodeError) as caught:
        decode_json_body(body, limits=ClipLimits(), max_parse_bytes=1024)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda b: b.replace(b'"data":"', b'"data":"!'), 400),  # not base64
        (lambda b: b.replace(b'"shape":[3,', b'"shape":[4,'), 400),  # length mismatch
        (lambda b: b.replace(b'"uint8"', b'"int16"'), 422),
        (lambda b: b[:-3], 400),  # truncated
        (lambda b: b.replace(b"{", b'{"clips":[],', 1), 413),  # both forms
    ],
)
def test_large_base64_json_refusals(mutate: Callable[[bytes], bytes], status: int) -> None:
    clips = np.zeros((3, 4, 8, 8, 3), np.uint8)
    body = mutate(_b64_body(clips))
    with pytest.raises(ClipDecodeError) as caught:
        decode_json_body(body, limits=ClipLimits(), max_parse_bytes=64)
    assert caught.value.status == status


def test_large_base64_json_may_put_data_first() -> None:
    clips = np.random.default_rng(1).integers(0, 256, (2, 4, 8, 8, 3), dtype=np.uint8)
    payload = encode_json(clips)
    body = json.dumps({"data": payload["data"], "shape": payload["shape"]}).encode()
    decoded = decode_json_body(body, limits=ClipLimits(), max_parse_bytes=64)
    np.testing.assert_array_equal(decoded, clips)


@pytest.mark.parametrize(
    "body",
    [
        b'{"pad":"' + b"x" * 4096 + b'","data":"AAAA","shape":[1,1,1,1,3]}',  # key past the limit
        b'{"data"' + b" " * 4096 + b':"AAAA","shape":[1,1,1,1,3]}',  # spaces past the limit
    ],
)
def test_a_data_key_past_the_parse_limit_is_413(body: bytes) -> None:
    """Everything before the 'data' string is parsed as JSON, so it must lie within the parse
    limit: the key is not looked for beyond it (a 64 MB body without one is not scanned)."""
    with pytest.raises(ClipDecodeError) as caught:
        decode_json_body(body, limits=ClipLimits(), max_parse_bytes=1024)
    assert caught.value.status == 413
