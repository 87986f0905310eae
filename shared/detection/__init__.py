"""The detection statistic both sides compute: PRADA and its clip embedding (numpy only).

The victim runs it per API key to raise alarms; the attacker's stealth mode runs the same
public algorithm on its own query stream to stay under the alarm.
"""

from shared.detection.embedding import NaturalnessEmbedding, clip_statistics
from shared.detection.prada import (
    PradaConfig,
    PradaState,
    QueryOutcome,
    observe,
    pooled_distances,
    shapiro_w,
)

__all__ = [
    "NaturalnessEmbedding",
    "PradaConfig",
    "PradaState",
    "QueryOutcome",
    "clip_statistics",
    "observe",
    "pooled_distances",
    "shapiro_w",
]
