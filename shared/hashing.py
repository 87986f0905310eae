"""Content hashes of clips and the victim identity they are paid answers of.

The attacker never pays twice for one clip: its response cache is keyed by
``cache_key(victim_identity(...), clip_hash(clip))``. Both hashes are BLAKE2b with a
personalisation string per purpose, so a clip hash can never equal an identity digest by
construction, and bumping the ``.v1`` suffix invalidates every cached answer at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import numpy as np

__all__ = [
    "CLIP_HASH_HEX_LENGTH",
    "IDENTITY_HEX_LENGTH",
    "batch_hashes",
    "cache_key",
    "clip_hash",
    "normalise_url",
    "victim_identity",
]

_CLIP_PERSON: Final = b"vidsteal.clip.v1"  # blake2b personalisation: at most 16 bytes
_IDENTITY_PERSON: Final = b"vidsteal.vict.v1"
_CLIP_DIGEST_SIZE: Final = 16
_IDENTITY_DIGEST_SIZE: Final = 8
CLIP_HASH_HEX_LENGTH: Final = 2 * _CLIP_DIGEST_SIZE
IDENTITY_HEX_LENGTH: Final = 2 * _IDENTITY_DIGEST_SIZE
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HEX_RE: Final = re.compile(r"^[0-9a-f]+$")


def clip_hash(clip: np.ndarray) -> str:
    """Hex BLAKE2b-128 of one clip ``(T, H, W, 3)``: its dtype, shape and C-order bytes.

    Any memory layout (slices, transposes) hashes like its C-contiguous copy; only
    non-contiguous inputs are copied.
    """
    if not isinstance(clip, np.ndarray):
        raise TypeError(f"clip_hash expects a numpy array, got {type(clip).__name__}")
    if clip.ndim != 4:
        raise ValueError(f"clip_hash expects one clip (T, H, W, 3), got shape {clip.shape}")
    digest = hashlib.blake2b(digest_size=_CLIP_DIGEST_SIZE, person=_CLIP_PERSON)
    # dtype.str carries kind, size and byte order ("|u1"); the shape keeps a (2, 8, ...) clip
    # from hashing like a (4, 4, ...) one with the same bytes.
    header = f"{clip.dtype.str};{','.join(str(d) for d in clip.shape)};"
    digest.update(header.encode("ascii"))
    digest.update(np.ascontiguousarray(clip).data.cast("B"))
    return digest.hexdigest()


def batch_hashes(clips: np.ndarray) -> list[str]:
    """:func:`clip_hash` of every clip in a batch ``(N, T, H, W, 3)``."""
    if not isinstance(clips, np.ndarray) or clips.ndim != 5:
        shape = getattr(clips, "shape", None)
        raise ValueError(f"batch_hashes expects a batch (N, T, H, W, 3), got shape {shape}")
    return [clip_hash(clip) for clip in clips]


def normalise_url(url: str) -> str:
    """Canonical form of a victim base URL.

    Lowercases scheme and host, drops a default port (80 for http, 443 for https), the
    fragment and trailing slashes of the path; keeps user info, path case and the query.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal; urlsplit strips the brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in victim URL {url!r}") from exc
    netloc = host
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{host}:{port}"
    if "@" in parts.netloc:
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def victim_identity(
    url: str,
    model_tag: str,
    output_mode: str,
    top_k: int | None,
    *,
    key_id: str | None = None,
    policy_fingerprint: str | None = None,
) -> str:
    """Short stable digest (16 hex chars) naming what a paid answer is an answer *of*.

    Answers from a different server, model, output mode or top-k are different answers, so each
    gets its own identity; so are answers to a different API key (``key_id``) or under a
    different answer policy (``policy_fingerprint``, published by the server: defenses, noise,
    rounding, poisoning). ``top_k`` is included as given (pass ``None`` where it does not
    apply). Without ``key_id`` and ``policy_fingerprint`` (servers that do not publish them)
    the digest is the one older versions computed, so their caches stay valid.
    """
    fields: dict[str, object] = {
        "url": normalise_url(url),
        "model_tag": model_tag.strip(),
        "output_mode": output_mode.strip().lower(),
        "top_k": top_k,
    }
    if key_id is not None:
        fields["key_id"] = key_id
    if policy_fingerprint is not None:
        fields["policy"] = policy_fingerprint
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    digest = hashlib.blake2b(
        canonical.encode("utf-8"), digest_size=_IDENTITY_DIGEST_SIZE, person=_IDENTITY_PERSON
    )
    return digest.hexdigest()


def cache_key(identity: str, clip_hash: str) -> str:
    """``"<identity>:<clip hash>"``, the response-cache key of one clip at one victim."""
    for name, value in (("identity", identity), ("clip_hash", clip_hash)):
        if not _HEX_RE.match(value):
            raise ValueError(f"{name} must be a lowercase hex digest, got {value[:40]!r}")
    return f"{identity}:{clip_hash}"
