"""The attack recipes the benchmarks and the scoreboard share, and the scoreboard's rows.

``attack_config`` turns a recipe (output mode, query source or data-free/selection section,
training overrides) into the attacker's config for one (attack, seed) job; ``bench/extraction.py``
and the scoreboard both call it, so a row of the scoreboard is the same attack the extraction
bench measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vidsteal.processes import REPO

__all__ = [
    "ACTIVE_ROUND",
    "CLIPS_PER_VIDEO",
    "EVAL_SOURCE",
    "LAYERED",
    "NATURAL",
    "POINTS",
    "SCOREBOARD_ATTACKS",
    "SOFT_LOSS",
    "STUDENT",
    "TRAIN",
    "attack_config",
    "prefix_stable",
    "recipe_without_stream",
    "scoreboard_attacks",
]

LAYERED: dict[str, Any] = {"kind": "stacked_affine", "layered": 0.8}
NATURAL: dict[str, Any] = {"kind": "synthactions", "seed": 777, "labelled": True}
EVAL_SOURCE: dict[str, Any] = {"kind": "synthactions", "seed": 424242, "labelled": True}
POINTS = [1250, 2500, 5000, 10000, 20000]

# The recipe every attack uses (attacker defaults, spelled out so the results file carries it).
STUDENT: dict[str, Any] = {
    "architecture": "tiny3d",
    "kwargs": {"widths": [24, 48, 96, 192], "blocks": [1, 3, 3, 1]},
}
TRAIN: dict[str, Any] = {
    "plan": "continual",
    "epochs": 16,
    "batch_size": 64,
    "lr": 6e-3,
    "hard_label_lr_ratio": 1 / 3,  # a hard-label loss (label-only keys) trains at 2e-3
    "weight_decay": 0.05,
    "warmup_steps": 50,
    "threads": 1,
    "precision": "auto",
}
# kl on probabilities, the top-k aware loss on top-k answers, both at T=4 (hard_ce for labels).
SOFT_LOSS: dict[str, Any] = {"loss": {"name": "auto", "temperature": 4.0}}
# Active selection: rounds of ACTIVE_ROUND paid clips (the round ends fall on the POINTS).
ACTIVE_ROUND = 1250
CLIPS_PER_VIDEO = 8  # the video-folder attack's clips per mp4
DATAFREE_EXAMPLE = REPO / "examples" / "datafree_generator.yaml"

#: The scoreboard's rows, in order: every attack the attacker has.
SCOREBOARD_ATTACKS = (
    "noise",
    "stacked_affine",
    "layered",
    "video_folder",
    "labelled_mix",
    "stealth",
    "active_balanced",
    "datafree",
)


def scoreboard_attacks(video_root: Path) -> dict[str, dict[str, Any]]:
    """Recipe per scoreboard row (probabilities answered); ``video_root``: an mp4 folder with at
    least budget / CLIPS_PER_VIDEO videos."""
    datafree = yaml.safe_load(DATAFREE_EXAMPLE.read_text())["query"]["datafree"]
    return {
        "noise": {"output": "probs", "source": {"kind": "noise"}, "train": SOFT_LOSS},
        "stacked_affine": {
            "output": "probs",
            "source": {"kind": "stacked_affine"},
            "train": SOFT_LOSS,
        },
        "layered": {"output": "probs", "source": LAYERED, "train": SOFT_LOSS},
        "video_folder": {
            "output": "probs",
            "source": {
                "kind": "video_folder",
                "root": str(video_root),
                "clips_per_video": CLIPS_PER_VIDEO,
            },
            "train": SOFT_LOSS,
        },
        "labelled_mix": {
            "output": "probs",
            "source": {
                "kind": "mix",
                "parts": [
                    {"source": NATURAL, "weight": 0.05},
                    {"source": LAYERED, "weight": 0.95},
                ],
            },
            "train": {**SOFT_LOSS, "true_label_weight": 1.0},
        },
        "stealth": {
            "output": "probs",
            "source": LAYERED,
            "stealth": {"enabled": True, "natural": NATURAL, "target_w": 0.95},
            "train": SOFT_LOSS,
        },
        "active_balanced": {
            "output": "probs",
            "source": LAYERED,
            "select": {"strategy": "balanced", "pool_factor": 8},
            "train": SOFT_LOSS,
        },
        "datafree": {"output": "probs", "datafree": datafree, "train": {**SOFT_LOSS, "epochs": 4}},
    }


def prefix_stable(recipe: dict[str, Any]) -> bool:
    """Whether a run at a smaller budget sends exactly the first queries of a larger one.

    Not so for active selection (its rounds follow the budget) and the data-free generator (a
    budget too small for a generator step is spent on student steps)."""
    return "select" not in recipe and "datafree" not in recipe


def recipe_without_stream(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's answers and training, without what decides its query stream."""
    return {k: v for k, v in recipe.items() if k not in ("source", "select", "datafree", "stealth")}


def attack_config(
    name: str,
    spec: dict[str, Any],
    *,
    seed: int,
    url: str,
    key: str,
    eval_key: str,
    redis_url: str,
    out: Path,
    scale: float = 1.0,
    budget: int | None = None,
    eval_clips: int = 1000,
    overrides: dict[str, Any] | None = None,
    student: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The attacker config of one (attack, seed) job, as YAML would hold it.

    The budget is ``budget`` when given, else ``spec["budget"] * scale`` (at least 100); fidelity
    is evaluated at each of POINTS within ``spec["budget"]`` (at the end only when absent)."""
    if budget is None:
        budget = max(100, round(spec["budget"] * scale))
    points = [p / spec["budget"] for p in POINTS if p <= spec["budget"]] if "budget" in spec else []
    query: dict[str, Any] = {"batch_clips": 32, "concurrency": 4}
    if "datafree" in spec:
        query["datafree"] = spec["datafree"]
    else:
        query["source"] = spec["source"]
    if "select" in spec:
        # Rounds of ACTIVE_ROUND clips unless the spec names its own count.
        query["select"] = {"rounds": max(1, round(budget / ACTIVE_ROUND)), **spec["select"]}
    config: dict[str, Any] = {
        "name": f"{name}-seed{seed}",
        "victim": {"url": url, "api_key": key, "eval_api_key": eval_key},
        "budget": budget,
        "seed": seed,
        "redis_url": redis_url,
        "out": str(out / f"{name}-seed{seed}"),
        "query": query,
        "student": student or STUDENT,
        "train": {**TRAIN, **spec.get("train", {}), **(overrides or {})},
        "eval": {"source": EVAL_SOURCE, "clips": eval_clips, "points": points or [1.0]},
    }
    if "stealth" in spec:
        config["stealth"] = spec["stealth"]
    return config
