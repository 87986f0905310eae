"""The victim's own distribution (grey box): SynthActions clips, optionally with true labels.

Recipe: ``{"source": "synthactions", "seed", "index", "difficulty", "shape"}``, plus ``"label"``
when the source is labelled (an unlabelled source does not leak the label into its recipes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from attacker.sources._base import RECIPE_VERSION, ClipShape, QueryClip, SourceError, finish_clip
from attacker.sources.config import SynthActionsConfig
from shared.synthactions import SynthActions

__all__ = ["SynthActionsSource", "render_synthactions"]


def _dataset(seed: int, shape: ClipShape, difficulty: float) -> SynthActions:
    try:
        return SynthActions(
            seed=seed,
            frames=shape.frames,
            height=shape.height,
            width=shape.width,
            difficulty=difficulty,
        )
    except ValueError as exc:
        raise SourceError(f"synthactions: {exc} (clip shape {shape})") from None


class SynthActionsSource:
    """Clips ``offset, offset + 1, ...`` of SynthActions ``seed`` at the clip shape (infinite).

    The run seed is not used: the config's ``seed`` names the victim's distribution, and
    ``offset`` keeps the queried clips apart from an evaluation range of the same seed.
    """

    def __init__(self, config: SynthActionsConfig, *, shape: ClipShape, seed: int) -> None:
        del seed  # see the class docstring
        self.name = "synthactions"
        self.config = config
        self.shape = shape
        self.dataset = _dataset(config.seed, shape, config.difficulty)

    def __iter__(self) -> Iterator[QueryClip]:
        index = self.config.offset
        while True:
            label = self.dataset.label(index)
            recipe: dict[str, Any] = {
                "v": RECIPE_VERSION,
                "source": "synthactions",
                "seed": self.config.seed,
                "index": index,
                "difficulty": self.config.difficulty,
                "shape": self.shape.as_list(),
            }
            true_label = label if self.config.labelled else None
            if true_label is not None:
                recipe["label"] = true_label
            clip = finish_clip(self.dataset.clip(index), self.shape)
            yield QueryClip(clip=clip, recipe=recipe, true_label=true_label)
            index += 1


def render_synthactions(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
    dataset = _dataset(int(recipe["seed"]), shape, float(recipe.get("difficulty", 1.0)))
    return finish_clip(dataset.clip(int(recipe["index"])), shape)
