"""The detector plug-ins a victim offers, by the name a key's policy selects them with."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from shared.detection import NaturalnessEmbedding
from shared.detection.ood import OodCalibration
from victim_server.detection.base import Detector
from victim_server.detection.ood import OodDetector
from victim_server.detection.prada import (
    PradaDetector,
    feature_embedding,
    statistics_embedding,
)
from victim_server.detection.seat import SeatDetector
from victim_server.detection.store import PradaStore
from victim_server.script_pipeline import ScriptPipeline

__all__ = ["FEATURE_SET_BOUND", "STATISTICS_SET_BOUND", "build_detectors"]

# Members of G_c kept per class (reservoir sampling past that): the cost bound per query and
# the Redis memory per key (features: 16 classes x 256 x 256-dim float32 = 4 MiB at most).
FEATURE_SET_BOUND = 256
STATISTICS_SET_BOUND = 1024


def build_detectors(
    redis: Redis,
    *,
    feature_dim: int,
    embedding: NaturalnessEmbedding,
    ood: OodCalibration | None,
    seat_weights: Path | None = None,
    scripts: ScriptPipeline | None = None,
) -> dict[str, Detector]:
    """``redis`` must return bytes (PRADA's sets and SEAT's ring are binary). ``seat_weights``:
    the SEAT encoder (default: the committed one). ``scripts``: the pipeline the OOD
    monitor's update shares with the ledger's commit (its replies may be text)."""
    no_features = None if feature_dim else "the served model exposes no penultimate features"
    return {
        "prada": PradaDetector(
            "prada",
            PradaStore(redis, dim=max(feature_dim, 1), namespace="prada"),
            feature_embedding,
            max_set=FEATURE_SET_BOUND,
            available=no_features,
        ),
        "prada_stats": PradaDetector(
            "prada_stats",
            PradaStore(redis, dim=embedding.dim, namespace="prada_stats"),
            statistics_embedding(embedding),
            max_set=STATISTICS_SET_BOUND,
        ),
        "ood": OodDetector(redis, ood, scripts),
        "seat": SeatDetector(redis, path=seat_weights),
    }
