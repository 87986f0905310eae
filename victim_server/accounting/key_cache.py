"""A per-process copy of key records for the classify path, so a request costs no Redis read
before its body is decoded.

Not an authority: the reserve script charges against the record in Redis and refuses (``STALE``,
nothing charged) a request made with a copy older than the record's revision, which every
change of policies or revocation bumps. Budget and spend in the copy are refreshed from every
reservation; they only decide whether a spent key is refused before its body is read.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from dataclasses import dataclass

from victim_server.accounting.keys import ApiKey, KeyStore, hash_secret, split_api_key

DEFAULT_TTL_S = 5.0
DEFAULT_MAX_ENTRIES = 4096


@dataclass(frozen=True)
class _Entry:
    key: ApiKey
    secret_sha256: str
    expires: float


class KeyCache:
    def __init__(
        self,
        store: KeyStore,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}

    async def authenticate(self, api_key: str) -> ApiKey | None:
        """The record of a valid API key (a copy up to ``ttl_s`` old), else None."""
        parts = split_api_key(api_key)
        if parts is None:
            return None
        key_id, secret = parts
        digest = hash_secret(secret)
        entry = self._entries.get(key_id)
        if (
            entry is not None
            and entry.expires > time.monotonic()
            and hmac.compare_digest(entry.secret_sha256, digest)
        ):
            return entry.key
        return await self._read(api_key, key_id, digest)

    async def refresh(self, api_key: str) -> ApiKey | None:
        """The record as it is now in Redis (after a ``STALE`` reservation)."""
        parts = split_api_key(api_key)
        if parts is None:
            return None
        return await self._read(api_key, parts[0], hash_secret(parts[1]))

    def spent(self, key_id: str, *, budget: int, spent: int) -> None:
        """Budget and spend as a reservation just saw them, kept when they change whether the
        key has anything left (the only use of the copy's numbers)."""
        entry = self._entries.get(key_id)
        if entry is not None and (entry.key.remaining > 0) != (budget > spent):
            key = dataclasses.replace(entry.key, budget=budget, spent=spent)
            self._entries[key_id] = dataclasses.replace(entry, key=key)

    async def _read(self, api_key: str, key_id: str, digest: str) -> ApiKey | None:
        key, _ = await self._store.authenticate(api_key)
        if key is None:
            self._entries.pop(key_id, None)
            return None
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # the admin-created key set is small; this is a bound only
        self._entries[key_id] = _Entry(key, digest, time.monotonic() + self._ttl)
        return key
