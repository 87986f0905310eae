"""The attacker's Prometheus metrics (prefix ``vidsteal_attacker_``), served while it runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from attacker.collect import CollectStats

PHASES = ("collect", "eval-set", "train", "report", "done")


class AttackerMetrics:
    def __init__(self, run_name: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.paid = Counter(
            "vidsteal_attacker_queries_paid_total",
            "Queries the attacker paid for.",
            ["run"],
            registry=r,
        )
        self.cache_hits = Counter(
            "vidsteal_attacker_cache_hits_total",
            "Queries answered from the Redis cache (not paid).",
            ["run"],
            registry=r,
        )
        self.retries = Counter(
            "vidsteal_attacker_retries_total",
            "Requests retried (429/503/409/timeouts).",
            ["run"],
            registry=r,
        )
        self.clips = Gauge(
            "vidsteal_attacker_transfer_clips",
            "Records in the transfer set so far.",
            ["run"],
            registry=r,
        )
        self.fidelity = Gauge(
            "vidsteal_attacker_fidelity",
            "Top-1 agreement with the victim at the last evaluation.",
            ["run", "queries"],
            registry=r,
        )
        self.phase = Gauge(
            "vidsteal_attacker_phase",
            "1 for the phase the run is in.",
            ["run", "phase"],
            registry=r,
        )
        self.run = run_name
        self._seen = CollectStats()
        self._server: Any = None

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def on_collect(self, stats: CollectStats) -> None:
        self.paid.labels(self.run).inc(max(0, stats.paid - self._seen.paid))
        self.cache_hits.labels(self.run).inc(max(0, stats.cache_hits - self._seen.cache_hits))
        self.clips.labels(self.run).set(stats.clips)
        self._seen = CollectStats(paid=stats.paid, cache_hits=stats.cache_hits)

    def on_retry(self, reason: str) -> None:
        self.retries.labels(self.run).inc()

    def on_phase(self, name: str) -> None:
        current = name.split("@")[0]
        for phase in PHASES:
            self.phase.labels(self.run, phase).set(1.0 if phase == current else 0.0)

    def on_fidelity(self, queries: int, top1: float) -> None:
        self.fidelity.labels(self.run, str(queries)).set(top1)

    def hooks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_collect": self.on_collect,
            "on_retry": self.on_retry,
            "on_phase": self.on_phase,
            "on_fidelity": self.on_fidelity,
        }
