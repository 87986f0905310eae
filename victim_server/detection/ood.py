"""The out-of-distribution rate monitor as a detector plug-in (``ood``).

Each answered clip is flagged when the victim's own OOD score (energy or max-softmax, from the
logits of the same forward pass) passes the benign calibration's threshold; a Bernoulli CUSUM
per key (``shared.detection.ood``) alarms when the key's flag rate has shifted from the benign
rate to the attack rate. The recursion runs in one Redis script per batch, so concurrent
requests and server processes update one statistic atomically, without a lock:

    vs:{key_id}:det:ood   hash: statistic, queries, flagged, alarm_query, alarm_at
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from shared.detection.ood import OodCalibration
from victim_server.accounting import keyspace
from victim_server.detection.base import DetectorUnavailable, Observation, Verdict
from victim_server.script_pipeline import ScriptPipeline

__all__ = [
    "CUSUM_SCRIPT",
    "OodDetector",
    "cusum_result",
    "cusum_status",
    "cusum_verdict",
    "now_iso",
]

# KEYS[1] state hash; ARGV: flagged increment, unflagged increment, limit, flags ("0"/"1" per
# clip, in query order), now (ISO time). Mirrors shared.detection.ood.cusum_observe. Other
# detectors with a Bernoulli CUSUM of per-clip flags (``seat``) run it after their own steps.
CUSUM_SCRIPT = """
local s = tonumber(redis.call('HGET', KEYS[1], 'statistic') or '0')
local q = tonumber(redis.call('HGET', KEYS[1], 'queries') or '0')
local f = tonumber(redis.call('HGET', KEYS[1], 'flagged') or '0')
local alarm = redis.call('HGET', KEYS[1], 'alarm_query')
local up, down, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local flags = ARGV[4]
local new = 0
for i = 1, #flags do
  q = q + 1
  if string.sub(flags, i, i) == '1' then
    f = f + 1
    s = s + up
  else
    s = s + down
  end
  if s < 0 then s = 0 end
  if (not alarm) and s >= limit then
    alarm = tostring(q)
    new = 1
    redis.call('HSET', KEYS[1], 'alarm_query', alarm, 'alarm_at', ARGV[5])
  end
end
local text = string.format('%.17g', s)
redis.call('HSET', KEYS[1], 'statistic', text, 'queries', q, 'flagged', f)
return {text, q, f, alarm or '', redis.call('HGET', KEYS[1], 'alarm_at') or '', new}
"""


class OodDetector:
    name = "ood"

    def __init__(
        self,
        redis: Redis,
        calibration: OodCalibration | None,
        scripts: ScriptPipeline | None = None,
    ) -> None:
        """``scripts``: the pipeline the update shares with the request's other writes (the
        Idempotency-Key commit), so both cost one round trip; its own by default."""
        self._redis = redis
        self.calibration = calibration
        self._script = (scripts or ScriptPipeline(redis)).register(CUSUM_SCRIPT)

    def check(self) -> None:
        if self.calibration is None:
            raise DetectorUnavailable(
                "no OOD calibration for the served model (python -m victim_server "
                "calibrate-detectors, or --ood-calibration)"
            )

    async def observe(self, key_id: str, batch: Observation) -> Verdict:
        self.check()
        assert self.calibration is not None
        up, down = self.calibration.increments
        flags = "".join("1" if f else "0" for f in self.calibration.flags(batch.logits))
        raw = await self._script(
            keys=[keyspace.detection(key_id, "ood")],
            args=[repr(up), repr(down), repr(self.calibration.limit), flags, now_iso()],
        )
        return cusum_result(raw)

    async def status(self, key_id: str) -> Verdict:
        return await cusum_status(self._redis, keyspace.detection(key_id, "ood"))

    async def reset(self, key_id: str) -> None:
        await self._redis.delete(keyspace.detection(key_id, "ood"))


def cusum_result(raw: list[Any]) -> Verdict:
    """The verdict :data:`CUSUM_SCRIPT` returns."""
    statistic, queries, _, alarm_query, alarm_at, new = (_text(v) for v in raw)
    return cusum_verdict(statistic, queries, alarm_query, alarm_at, new_alarm=new == "1")


async def cusum_status(redis: Redis, name: str) -> Verdict:
    """The verdict of the CUSUM state hash ``name``."""
    meta = {_text(k): _text(v) for k, v in (await redis.hgetall(name)).items()}
    return cusum_verdict(
        meta.get("statistic", ""),
        meta.get("queries", "0"),
        meta.get("alarm_query", ""),
        meta.get("alarm_at", ""),
    )


def cusum_verdict(
    statistic: str, queries: str, alarm_query: str, alarm_at: str, *, new_alarm: bool = False
) -> Verdict:
    """A CUSUM detector's verdict from its state hash's text fields."""
    return Verdict(
        queries=int(queries or 0),
        distances=0,
        w=None,
        alarm=bool(alarm_query),
        alarm_query=int(alarm_query) if alarm_query else None,
        alarm_at=datetime.fromisoformat(alarm_at) if alarm_at else None,
        new_alarm=new_alarm,
        score=float(statistic) if statistic else None,
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
