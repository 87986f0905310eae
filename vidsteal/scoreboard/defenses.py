"""The scoreboard's columns of answer policies: one API key each (admin API bodies)."""

from __future__ import annotations

from typing import Any

__all__ = ["AM_FRACTION", "AM_NU", "MAD_EPSILON", "SCOREBOARD_DEFENSES", "defense_policies"]

AM_NU = 1000.0
AM_FRACTION = 0.02  # adaptive misinformation answers 2% of benign calibration clips mostly wrong
MAD_EPSILON = 1.0

SCOREBOARD_DEFENSES = (
    "none",
    "mad_argmax",
    "am_2pct",
    "round_1",
    "top_3",
    "reverse_sigmoid",
    "noise_0.05",
)


def defense_policies(am_tau: float) -> dict[str, dict[str, Any]]:
    """Policy per column; ``am_tau`` is adaptive misinformation's calibrated threshold."""
    return {
        "none": {},
        "mad_argmax": {"prediction_poisoning": {"epsilon": MAD_EPSILON, "keep_argmax": True}},
        "am_2pct": {"adaptive_misinformation": {"tau": am_tau, "nu": AM_NU}},
        "round_1": {"round_decimals": 1},
        "top_3": {"top_k": 3},
        "reverse_sigmoid": {"reverse_sigmoid": {"beta": 0.7, "gamma": 0.4}},
        "noise_0.05": {"gaussian_noise": {"sigma": 0.05}},
    }
