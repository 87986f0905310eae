"""API keys: created by the admin, shown once, stored as a SHA-256 of the secret."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, cast

from redis.asyncio import Redis

from shared.schemas import (
    BudgetState,
    DefensePolicy,
    DetectionPolicy,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    OutputMode,
)
from victim_server.accounting import keyspace

API_KEY_PREFIX = "vsk"
_OPERATION_TTL_S = 3600

# Both scripts are safe to run twice (the Redis client retries connection errors).
# KEYS[1] key record; ARGV[1] key id, ARGV[2..] field, value pairs. 1: created; 2: a record
# with this very secret exists (a retry finding its own first run, or a provisioned key seen
# again); 0: the id is taken. (The index set is another
# hash slot, so it is written apart: SADD is idempotent.)
_CREATE = """
local existing = redis.call('HGET', KEYS[1], 'secret_sha256')
if existing then
  for i = 2, #ARGV, 2 do
    if ARGV[i] == 'secret_sha256' then return existing == ARGV[i + 1] and 2 or 0 end
  end
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# KEYS[1] key record, KEYS[2] operation record; ARGV[1] amount, ARGV[2] operation TTL,
# ARGV[3] fingerprint of the request. 0: unknown key; 1: added; 2: this operation was done
# before with the same fingerprint (nothing added); 3: it was done with another fingerprint.
_TOP_UP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local done = redis.call('GET', KEYS[2])
if done then
  if done == ARGV[3] then return 2 end
  return 3
end
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'budget', tonumber(ARGV[1]))
return 1
"""


class TopUpStatus(IntEnum):
    UNKNOWN_KEY = 0
    ADDED = 1
    REPLAYED = 2  # the same operation id with the same amount: added once, earlier
    MISMATCH = 3  # the same operation id with another amount: refused


@dataclass(frozen=True)
class ApiKey:
    """A key's record as stored (never the secret)."""

    key_id: str
    name: str
    budget: int
    spent: int
    output: OutputMode
    top_k: int
    created_at: datetime
    revoked: bool
    detection: DetectionPolicy
    defenses: DefensePolicy
    # Bumped by every change of what the record says beyond budget and spend (policies,
    # revocation), so a copy cached per process is recognised as stale by the reserve script.
    revision: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.spent)

    def budget_state(self) -> BudgetState:
        return BudgetState(
            key_id=self.key_id, budget=self.budget, spent=self.spent, remaining=self.remaining
        )

    def public(self) -> KeyPublic:
        return KeyPublic(
            key_id=self.key_id,
            name=self.name,
            budget=self.budget,
            spent=self.spent,
            remaining=self.remaining,
            output=self.output,
            top_k=self.top_k,
            created_at=self.created_at,
            revoked=self.revoked,
            detection=self.detection,
            defenses=self.defenses,
        )


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(api_key: str) -> tuple[str, str] | None:
    """'vsk_<key_id>_<secret>' -> (key_id, secret); None when it is not of that form."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyStore:
    """API keys in Redis: one hash per key plus an index set for listing."""

    def __init__(self, redis: Redis, *, operation_ttl_s: int = _OPERATION_TTL_S) -> None:
        self._redis = redis
        self._operation_ttl_s = operation_ttl_s
        self._create = redis.register_script(_CREATE)
        self._top_up = redis.register_script(_TOP_UP)

    async def create(self, request: KeyCreate, *, api_key: str | None = None) -> KeyCreated | None:
        """Create a key with a fresh secret, or with ``api_key`` ('vsk_<id>_<secret>', for keys
        provisioned from configuration); None if that given key id already exists."""
        given = split_api_key(api_key) if api_key is not None else None
        if api_key is not None and given is None:
            raise ValueError("a provisioned API key must look like vsk_<key id>_<secret>")
        for _ in range(5):
            key_id, secret = given or (secrets.token_hex(6), secrets.token_urlsafe(32))
            created_at = datetime.now(UTC)
            record: dict[str, str | int] = {
                "name": request.name,
                "secret_sha256": hash_secret(secret),
                "budget": request.budget,
                "spent": 0,
                "output": request.output.value,
                "top_k": request.top_k,
                "created_at": created_at.isoformat(),
                "revoked": "0",
                # the admin API fills an omitted policy with the server's default first
                "detection": (request.detection or DetectionPolicy()).model_dump_json(),
                "defenses": request.defenses.model_dump_json(),
            }
            fields = [str(item) for pair in record.items() for item in pair]
            created = await self._create(keys=[keyspace.key_record(key_id)], args=[key_id, *fields])
            if int(created) == 0 and given is None:
                continue  # id collision: draw another
            if int(created) != 1 and given is not None:
                return None  # provisioned earlier (or taken): keep its budget and spend
            await self._redis.sadd(keyspace.KEY_INDEX, key_id)
            stored = await self.get(key_id)
            assert stored is not None
            return KeyCreated(
                **stored.public().model_dump(), api_key=f"{API_KEY_PREFIX}_{key_id}_{secret}"
            )
        raise RuntimeError("could not allocate a unique key id")

    async def get(self, key_id: str) -> ApiKey | None:
        raw = _text_dict(await self._redis.hgetall(keyspace.key_record(key_id)))
        return _parse_record(key_id, raw) if raw else None

    async def authenticate(self, api_key: str) -> tuple[ApiKey | None, str | None]:
        """(record, None) for a valid secret; (None, key_id or None) otherwise."""
        parts = split_api_key(api_key)
        if parts is None:
            return None, None
        key_id, secret = parts
        raw = _text_dict(await self._redis.hgetall(keyspace.key_record(key_id)))
        if not raw or not hmac.compare_digest(raw.get("secret_sha256", ""), hash_secret(secret)):
            return None, None
        return _parse_record(key_id, raw), key_id

    async def list(self) -> list[ApiKey]:
        ids = sorted(_text(m) for m in await self._redis.smembers(keyspace.KEY_INDEX))
        keys = [await self.get(key_id) for key_id in ids]
        return [key for key in keys if key is not None]

    async def top_up(
        self, key_id: str, amount: int, *, operation_id: str | None = None
    ) -> ApiKey | None:
        """Add ``amount`` to the budget once per ``operation_id`` (a retried call adds nothing
        more); None for an unknown key."""
        status, key = await self.top_up_once(key_id, amount, operation_id=operation_id)
        return key if status is not TopUpStatus.UNKNOWN_KEY else None

    async def top_up_once(
        self, key_id: str, amount: int, *, operation_id: str | None = None
    ) -> tuple[TopUpStatus, ApiKey | None]:
        """Add ``amount`` unless ``operation_id`` was done before (kept for the operation TTL):
        then nothing is added, and the status says whether that earlier call asked for the same
        amount (``REPLAYED``) or another (``MISMATCH``). One Lua script: two concurrent calls
        with one id add once."""
        operation = operation_id or secrets.token_hex(16)
        status = TopUpStatus(
            int(
                await self._top_up(
                    keys=[keyspace.key_record(key_id), keyspace.operation(key_id, operation)],
                    args=[amount, self._operation_ttl_s, f"amount={amount}"],
                )
            )
        )
        if status is TopUpStatus.UNKNOWN_KEY:
            return status, None
        return status, await self.get(key_id)

    async def revoke(self, key_id: str) -> ApiKey | None:
        key = keyspace.key_record(key_id)
        if not await self._redis.exists(key):
            return None
        await self._write_fields(key, {"revoked": "1"})
        return await self.get(key_id)

    async def set_policies(
        self,
        key_id: str,
        *,
        detection: DetectionPolicy | None = None,
        defenses: DefensePolicy | None = None,
    ) -> ApiKey | None:
        key = keyspace.key_record(key_id)
        if not await self._redis.exists(key):
            return None
        mapping: dict[str, str] = {}
        if detection is not None:
            mapping["detection"] = detection.model_dump_json()
        if defenses is not None:
            mapping["defenses"] = defenses.model_dump_json()
        if mapping:
            await self._write_fields(key, mapping)
        return await self.get(key_id)

    async def _write_fields(self, key: str, mapping: dict[str, str]) -> None:
        """Change record fields and bump its revision in one transaction."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=cast(Any, mapping))
            pipe.hincrby(key, "rev", 1)
            await pipe.execute()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text_dict(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _parse_record(key_id: str, raw: dict[str, str]) -> ApiKey:
    return ApiKey(
        key_id=key_id,
        name=raw.get("name", ""),
        budget=int(raw.get("budget", 0)),
        spent=int(raw.get("spent", 0)),
        output=OutputMode(raw.get("output", OutputMode.PROBS.value)),
        top_k=int(raw.get("top_k", 5)),
        created_at=datetime.fromisoformat(raw["created_at"]),
        revoked=raw.get("revoked") == "1",
        detection=_detection_policy(raw.get("detection", "{}")),
        defenses=_defense_policy(raw.get("defenses", "{}")),
        revision=int(raw.get("rev", 0)),
    )


# A key's record is read on every request; its policies change only when the admin sets them.
# Parsing each JSON text once per process (pydantic validation was ~half of authentication's
# CPU) returns one shared model per text: these models are never mutated.
@functools.lru_cache(maxsize=1024)
def _detection_policy(text: str) -> DetectionPolicy:
    return DetectionPolicy.model_validate(json.loads(text))


@functools.lru_cache(maxsize=1024)
def _defense_policy(text: str) -> DefensePolicy:
    return DefensePolicy.model_validate(json.loads(text))
