"""Prometheus metrics of the victim (prefix ``vidsteal_``), per app, multiprocess-aware.

With ``PROMETHEUS_MULTIPROC_DIR`` set (several uvicorn workers or processes), values go to that
directory and ``/metrics`` aggregates every process's files; otherwise each app owns a private
registry, so several apps in one process (tests) never collide.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Quarter-millisecond steps up to 2 ms: a cheap request takes 1-2 ms, and a quantile read from the
# histogram is interpolated inside one bucket (with 1-2.5 ms as one bucket, every p50 read 1.76).
LATENCY_BUCKETS = (
    0.0005,
    0.00075,
    0.001,
    0.00125,
    0.0015,
    0.00175,
    0.002,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class VictimMetrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode values live in files; a registry here would only duplicate them.
        self._registry = None if self.multiprocess else CollectorRegistry()
        r = self._registry
        self.queries = Counter(
            "vidsteal_queries_total",
            "Clips asked for, by key id and outcome.",
            ["key_id", "outcome"],
            registry=r,
        )
        self.requests = Counter(
            "vidsteal_requests_total",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "vidsteal_budget_remaining",
            "Queries left in a key's budget.",
            ["key_id"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.request_seconds = Histogram(
            "vidsteal_request_seconds",
            "Request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "vidsteal_inference_seconds",
            "Forward pass time of one micro-batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_clips = Histogram(
            "vidsteal_batch_clips", "Clips per micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.received_bytes = Counter(
            "vidsteal_received_bytes_total",
            "Request body bytes received on /v1/classify.",
            registry=r,
        )
        self.detection_w = Gauge(
            "vidsteal_detection_w",
            "PRADA Shapiro-Wilk W of a key's last test.",
            ["key_id"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.detection_score = Gauge(
            "vidsteal_detection_score",
            "A key's detector statistic after its last update (PRADA: W; ood: CUSUM S).",
            ["key_id", "detector"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.detection_alarms = Counter(
            "vidsteal_detection_alarms_total",
            "Detection alarms raised, by action.",
            ["action"],
            registry=r,
        )
        self.poisoned = Counter(
            "vidsteal_poisoned_answers_total",
            "Clips answered with poisoned outputs.",
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        if self._registry is not None:
            return generate_latest(self._registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
