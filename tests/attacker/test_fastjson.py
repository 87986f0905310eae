"""The attacker's JSON reads every text as the standard library does, and writes texts it reads
back to the same value."""

from __future__ import annotations

import json
import math

import pytest

from attacker.fastjson import dumps, loads

TEXTS = [
    '{"i":0,"hash":"ab","recipe":{"v":1,"shift":[0.26706435127268885,-1e-07]},"paid":false}',
    '{"label":"caf\\u00e9","probs":[0.018343,1.0,0],"true_label":null}',
    '{"label":"café"}',
    "[1, 2.5, 12345678901234567890]",
]


@pytest.mark.parametrize("text", TEXTS)
def test_same_value_as_the_standard_library(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


def test_texts_only_the_standard_library_reads_still_parse() -> None:
    value = loads(json.dumps({"score": float("nan"), "top": float("inf")}))
    assert math.isnan(value["score"]) and value["top"] == math.inf


def test_invalid_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        loads('{"i": 0,')


@pytest.mark.parametrize("text", TEXTS)
def test_written_compactly_and_read_back_to_the_same_value(text: str) -> None:
    value = json.loads(text)
    written = dumps(value)
    assert json.loads(written) == value
    assert ": " not in written and ", " not in written


def test_non_string_keys_are_written_as_the_standard_library_writes_them() -> None:
    assert json.loads(dumps({1: "a", "b": [1, 2]})) == {"1": "a", "b": [1, 2]}


def test_non_finite_floats_are_written_as_null() -> None:
    pytest.importorskip("orjson")  # the standard library's fallback writes NaN
    assert loads(dumps({"score": float("nan"), "probs": [0.5]})) == {"score": None, "probs": [0.5]}
