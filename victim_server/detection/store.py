"""PRADA state per API key, in Redis, shared by every server process; cached per process.

Layout (one hash tag per key, so a cluster keeps a key's detector on one shard; ``ns`` is the
detector's name, so two PRADA variants of one key never share state)::

    vs:{key_id}:det:<ns>:meta       hash: version, queries, w, pooled, alarm_query, alarm_at
    vs:{key_id}:det:<ns>:classes    hash: label -> JSON (seen, threshold, D_Gc running sums)
    vs:{key_id}:det:<ns>:G:<label>  float32 bytes: the growing set G_c (members x dim)
    vs:{key_id}:det:<ns>:D:<label>  float32 bytes: the latest distances D_c
    vs:{key_id}:det:<ns>:lock       a short lock held while one process updates the state

An update takes the lock and reads the state's version in one script, reloads the state only
if another process changed it, feeds the request's clips through
:func:`shared.detection.observe`, then writes back what changed and releases the lock in one
transaction (G_c only at the slots that changed: ``SETRANGE``, so a write costs the new
vectors, not the whole set): two round trips per update when this process holds the current
state, where lock, version read, write and release took four. A restart loses nothing: the
state is read back from Redis.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import numpy as np
from redis.asyncio import Redis

from shared.detection import PradaConfig, PradaState, observe
from shared.detection.prada import ClassState
from victim_server.accounting import keyspace
from victim_server.detection.base import DetectionBusy, Verdict

__all__ = ["DetectionBusy", "PradaStore", "Verdict"]

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock, meta; ARGV: token, lock ttl (ms). Takes the lock when it is free or already this
# token's (a retried call that had taken it), and then answers the state's meta hash with it.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {0, {}} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('HGETALL', KEYS[2])}
"""


class PradaStore:
    """``redis`` must return bytes (``decode_responses=False``): G_c and D_c are binary."""

    def __init__(
        self, redis: Redis, *, dim: int, namespace: str = "prada", lock_timeout_s: float = 5.0
    ) -> None:
        self._redis = redis
        self._dim = dim
        self._ns = namespace
        self._lock_timeout = lock_timeout_s
        self._cache: dict[str, tuple[int, PradaState, datetime | None]] = {}
        self._release = redis.register_script(_RELEASE)
        self._acquire = redis.register_script(_ACQUIRE)

    async def observe(
        self, key_id: str, config: PradaConfig, vectors: np.ndarray, labels: np.ndarray
    ) -> Verdict:
        token, meta = await self._lock(key_id)
        saved = False
        try:
            version, state, alarm_at = await self._load(key_id, meta)
            before = state.alarm_query
            touched: set[int] = set()
            slots: list[tuple[int, int, np.ndarray]] = []  # (label, slot, vector) in order
            for vector, label in zip(vectors, labels, strict=True):
                outcome = observe(state, config, vector, int(label))
                touched.add(outcome.label)
                if outcome.slot is not None:
                    slots.append((outcome.label, outcome.slot, vector))
            if before is None and state.alarm_query is not None:
                alarm_at = datetime.now(UTC)
            await self._save(key_id, version + 1, state, alarm_at, touched, slots, token)
            saved = True  # the lock went with the write
            self._cache[key_id] = (version + 1, state, alarm_at)
            return self._verdict(state, alarm_at, new_alarm=before is None and alarm_at is not None)
        finally:
            if not saved:
                await self._release(keys=[self._key(key_id, "lock")], args=[token])

    async def status(self, key_id: str) -> Verdict:
        _, state, alarm_at = await self._load(key_id)
        return self._verdict(state, alarm_at)

    def _key(self, key_id: str, part: str) -> str:
        return keyspace.detection(key_id, f"{self._ns}:{part}")

    async def reset(self, key_id: str) -> None:
        names = [self._key(key_id, "meta"), self._key(key_id, "classes")]
        names += [name async for name in self._redis.scan_iter(match=self._key(key_id, "[GD]:*"))]
        await self._redis.delete(*names)
        self._cache.pop(key_id, None)

    def _verdict(
        self, state: PradaState, alarm_at: datetime | None, *, new_alarm: bool = False
    ) -> Verdict:
        distances = sum(len(c.distances) for c in state.classes.values())
        return Verdict(
            queries=state.queries,
            distances=distances,
            w=state.w,
            alarm=state.alarm_query is not None,
            alarm_query=state.alarm_query,
            alarm_at=alarm_at,
            new_alarm=new_alarm,
            score=state.w,
        )

    async def _lock(self, key_id: str) -> tuple[str, dict[str, str]]:
        """The lock's token and the state's meta hash, read under the lock."""
        token = secrets.token_hex(8)
        keys = [self._key(key_id, "lock"), self._key(key_id, "meta")]
        deadline = asyncio.get_running_loop().time() + self._lock_timeout
        while True:
            taken, fields = await self._acquire(
                keys=keys, args=[token, int(self._lock_timeout * 2000)]
            )
            if int(taken):
                return token, _text(_pairs(fields))
            if asyncio.get_running_loop().time() > deadline:
                raise DetectionBusy(f"detector of key {key_id} is busy")
            await asyncio.sleep(0.002)

    async def _load(
        self, key_id: str, meta: dict[str, str] | None = None
    ) -> tuple[int, PradaState, datetime | None]:
        """The state at ``meta``'s version (read here when not given): this process's copy when
        it is current, else from Redis."""
        if meta is None:
            meta = _text(await self._redis.hgetall(self._key(key_id, "meta")))
        version = int(meta.get("version", 0))
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] == version:
            return cached
        state = PradaState(dim=self._dim, queries=int(meta.get("queries", 0)))
        state.w = float(meta["w"]) if meta.get("w") not in (None, "") else None
        state.pooled = int(meta.get("pooled", 0))
        state.alarm_query = int(meta["alarm_query"]) if meta.get("alarm_query") else None
        alarm_at = datetime.fromisoformat(meta["alarm_at"]) if meta.get("alarm_at") else None
        classes = _text(await self._redis.hgetall(self._key(key_id, "classes")))
        labels = [int(raw_label) for raw_label in classes]
        async with self._redis.pipeline(transaction=False) as pipe:
            for label in labels:
                pipe.get(self._key(key_id, f"G:{label}"))
                pipe.get(self._key(key_id, f"D:{label}"))
            blobs = await pipe.execute()
        for i, label in enumerate(labels):
            info = json.loads(classes[str(label)])
            members, dists = blobs[2 * i] or b"", blobs[2 * i + 1] or b""
            state.classes[label] = ClassState(
                members=_floats(members).reshape(-1, self._dim).copy(),
                seen=int(info["seen"]),
                threshold=float(info["threshold"]),
                g_count=int(info["g_count"]),
                g_sum=float(info["g_sum"]),
                g_sumsq=float(info["g_sumsq"]),
                distances=_floats(dists).tolist(),
            )
        return version, state, alarm_at

    async def _save(
        self,
        key_id: str,
        version: int,
        state: PradaState,
        alarm_at: datetime | None,
        touched: set[int],
        slots: list[tuple[int, int, np.ndarray]],
        token: str,
    ) -> None:
        """Write what changed and release the lock ``token`` holds, in one transaction."""
        meta = {
            "version": version,
            "queries": state.queries,
            "pooled": state.pooled,
            "w": "" if state.w is None else repr(state.w),
            "alarm_query": "" if state.alarm_query is None else state.alarm_query,
            "alarm_at": "" if alarm_at is None else alarm_at.isoformat(),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(key_id, "meta"), mapping=meta)  # type: ignore[arg-type]
            for label in touched:
                cls = state.classes[label]
                pipe.hset(
                    self._key(key_id, "classes"),
                    str(label),
                    json.dumps(
                        {
                            "seen": cls.seen,
                            "threshold": cls.threshold,
                            "g_count": cls.g_count,
                            "g_sum": cls.g_sum,
                            "g_sumsq": cls.g_sumsq,
                        }
                    ),
                )
                pipe.set(
                    self._key(key_id, f"D:{label}"),
                    np.asarray(cls.distances, dtype=np.float32).tobytes(),
                )
            width = self._dim * 4  # float32 bytes per member
            for label, slot, vector in slots:
                pipe.setrange(
                    self._key(key_id, f"G:{label}"),
                    slot * width,
                    np.asarray(vector, dtype=np.float32).tobytes(),
                )
            await self._release(keys=[self._key(key_id, "lock")], args=[token], client=pipe)
            await pipe.execute()


def _floats(raw: bytes | str) -> np.ndarray:
    if isinstance(raw, str):  # a text-mode client would have corrupted the floats already
        raise TypeError("PradaStore needs a Redis client with decode_responses=False")
    return np.frombuffer(raw, dtype=np.float32)


def _pairs(raw: Any) -> dict[Any, Any]:
    """HGETALL's reply as a dict: a script returns it as a flat [field, value, ...] list."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def _text(raw: dict[Any, Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {text(k): text(v) for k, v in raw.items()}
