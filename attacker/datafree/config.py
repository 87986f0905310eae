"""The ``query.datafree`` section: a generator trained against the student, the victim's side
of its gradient estimated from paid forward differences (DFME / MAZE style).

One round spends ``batch x (1 + directions)`` queries on a generator step (each generated clip
and ``directions`` probes around it) and ``student_steps x student_batch`` queries on fresh
generated clips for the student. Every probe is a paid query, cached and kept in the transfer
set like any other answer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DataFreeSection", "GeneratorSection"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GeneratorSection(_Strict):
    """Which video generator (:mod:`attacker.datafree.generators`) and its parameters."""

    name: Literal["motion", "conv3d"] = "motion"
    latent_dim: Annotated[int, Field(ge=2, le=1024)] = 64
    width: Annotated[int, Field(ge=4, le=512)] = 32  # channels of the widest layer / 2
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DataFreeSection(_Strict):
    generator: GeneratorSection = Field(default_factory=GeneratorSection)
    # Generator step: clips generated, and random directions probed around each.
    batch: Annotated[int, Field(ge=1, le=1024)] = 32
    directions: Annotated[int, Field(ge=1, le=64)] = 2
    # Forward-difference step in uint8 levels (a probe is the clip plus or minus this many levels
    # per pixel, Rademacher signs): the smallest step that survives the victim's uint8 input.
    step_levels: Annotated[int, Field(ge=1, le=64)] = 2
    generator_lr: Annotated[float, Field(gt=0)] = 5e-4
    # False: the control without the attack's gradient: no generator steps and no probes, the
    # student learns from the untrained generator's clips only.
    train_generator: bool = True
    # Weight of the batch's class-balance term on the student's predictions (0: plain DFME).
    diversity: Annotated[float, Field(ge=0)] = 0.5
    # Student steps per round, each on ``student_batch`` freshly generated, paid clips.
    student_steps: Annotated[int, Field(ge=0, le=100)] = 3
    student_batch: Annotated[int, Field(ge=1, le=1024)] = 64
    student_lr: Annotated[float, Field(gt=0)] = 2e-3
    # constant, or cosine from student_lr down to 5% of it over the run's budget.
    student_schedule: Literal["constant", "cosine"] = "constant"
    # Experience replay (MAZE): after each round's paid steps, ``replay_steps`` more student
    # steps on ``student_batch`` answers drawn from the last ``replay_size`` answered clips (no
    # query; the buffer lives in memory, T x H x W x 3 bytes a clip, and restarts empty when a
    # run resumes from its checkpoint). 0: off.
    replay_size: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    replay_steps: Annotated[int, Field(ge=0, le=100)] = 0
    # Train the student on the probes' answers too (near-duplicates of the generated clips).
    student_on_probes: bool = False
    # l1: mean absolute error between mean-centred logits (DFME); kl: KL at ``temperature``.
    student_loss: Literal["l1", "kl"] = "l1"
    temperature: Annotated[float, Field(gt=0)] = 1.0
    # Recovered logits are log(p + floor), mean-centred (answers are rounded to 6 digits).
    probability_floor: Annotated[float, Field(gt=0, lt=0.01)] = 1e-6
    # Generator and student state saved every this many queries (resume after a crash).
    checkpoint_every: Annotated[int, Field(ge=1)] = 20_000
    threads: Annotated[int, Field(ge=0)] = 0  # torch threads (0: torch's default)

    @model_validator(mode="after")
    def _replay_needs_a_buffer(self) -> DataFreeSection:
        if (self.replay_steps > 0) != (self.replay_size > 0):
            raise ValueError("replay_size and replay_steps are both 0 (off) or both > 0")
        return self

    @property
    def generator_queries(self) -> int:
        """Queries one generator step costs (0 without generator training)."""
        return self.batch * (1 + self.directions) if self.train_generator else 0

    @property
    def round_queries(self) -> int:
        """Queries one round (a generator step and its student steps) costs."""
        return self.generator_queries + self.student_steps * self.student_batch
