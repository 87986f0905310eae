"""The victim's own distribution (grey box): SynthActions clips, optionally with true labels.

Recipe: ``{"source": "synthactions", "seed", "index", "difficulty", "shape"}``, plus ``"label"``
when the source is labelled (an unlabelled source does not leak the label into its recipes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field

from attacker.sources._base import (
    RECIPE_VERSION,
    ClipShape,
    QueryClip,
    SourceConfigBase,
    SourceError,
    finish_clip,
)
from attacker.sources.registry import register_source
from shared.synthactions import SynthActions

__all__ = ["SynthActionsConfig", "SynthActionsSource", "render_synthactions"]


class SynthActionsConfig(SourceConfigBase):
    """The embedded victim's own distribution (grey box): SynthActions clips ``offset, offset+1,
    ...`` of ``seed``, rendered at the victim's clip shape. ``labelled`` attaches the true label.
    """

    kind: Literal["synthactions"] = "synthactions"
    seed: int = Field(ge=0)
    offset: int = Field(0, ge=0)
    labelled: bool = True
    difficulty: float = Field(1.0, ge=0.0, le=1.0)


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


def render_synthactions(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
    """The SynthActions clip a recipe names."""
    dataset = _dataset(int(recipe["seed"]), shape, float(recipe.get("difficulty", 1.0)))
    return finish_clip(dataset.clip(int(recipe["index"])), shape)


@register_source("synthactions", config=SynthActionsConfig, render=render_synthactions)
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
