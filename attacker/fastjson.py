"""JSON parsing on the attacker's hot paths (transfer-set records, cached answers).

orjson parses several times faster than the standard library where it is installed (the
attacker extra installs it); texts it refuses (``NaN``/``Infinity``, which ``json.dumps`` may
write) and installs without it fall back to :func:`json.loads`, so every text parses to the same
value either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["loads"]


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
