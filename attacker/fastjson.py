"""JSON on the attacker's hot paths (transfer-set records, cached answers).

orjson parses and writes several times faster than the standard library where it is installed
(the attacker extra installs it). Texts it refuses (``NaN``/``Infinity``, which ``json.dumps`` may
write) and installs without it fall back to :func:`json.loads`, so every text parses to the same
value either way. :func:`dumps` writes compact JSON (no spaces); JSON has no NaN or Infinity, so
orjson writes a non-finite float as ``null``, as the victim's own answers do on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _pick_dumps() -> Callable[[Any], str]:
    try:
        import orjson
    except ImportError:
        return _compact

    def dumps(value: Any) -> str:
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # e.g. non-string keys, which json.dumps writes as strings
            return _compact(value)

    return dumps


def _pick() -> Callable[[str | bytes], Any]:
    try:
        import orjson
    except ImportError:
        return json.loads

    def loads(text: str | bytes) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return json.loads(text)

    return loads


loads = _pick()
dumps = _pick_dumps()
