"""The data-free loop (DFME, Truong et al. 2021; MAZE, Kariyappa et al. 2021), for video.

Each round:

1. **Generator step.** ``batch`` latents -> clips ``x = G(z)`` (float, quantised to uint8 with a
   straight-through gradient). The victim answers each clip and ``directions`` lattice probes
   around it (all paid). The generator maximises the student-victim disagreement
   ``D = mean |s(x) - v(x)|`` over mean-centred logits, plus a class-balance term on the
   student's batch predictions (``diversity``). ``dD/dx`` has two parts: the student's, by
   autograd, and the victim's, ``sign(s - v) . dv/dx``, estimated by forward differences of
   ``psi(x) = sign(s(x0) - v(x0)) . v(x)`` along the probes
   (:func:`~attacker.datafree.zeroth_order.forward_difference_gradient`).
2. **Student steps.** ``student_steps`` times: fresh generated clips (no gradient), the victim's
   answers (paid), one optimiser step of the student towards them (L1 on logits, or KL). The
   generator step's own clips (already answered) give the student one more step.
3. **Replay** (``replay_steps`` > 0, MAZE): more student steps on answers drawn from the last
   ``replay_size`` answered clips, no query. ``student_schedule: cosine`` decays the student's
   learning rate over the run's budget.

Every query goes through :class:`~attacker.datafree.oracle.PaidOracle`; the loop stops when it
says the run's target, allowance or the victim ended it. Deterministic for a seed at a fixed
number of torch threads, so a rerun regenerates the same clips and finds them in the cache.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacker.datafree.answers import answer_logits
from attacker.datafree.config import DataFreeSection
from attacker.datafree.generators import VideoGenerator
from attacker.datafree.oracle import PaidOracle
from attacker.datafree.replay import ReplayBuffer
from attacker.datafree.zeroth_order import forward_difference_gradient, lattice_probes
from attacker.students import StudentModel, StudentPreprocessing
from attacker.students.preprocess import segment_middle_indices
from shared.schemas import OutputMode

__all__ = [
    "DataFreeLoop",
    "DataFreeState",
    "RoundHook",
    "quantise",
    "scheduled_lr",
    "student_input",
    "student_loss",
]

RoundHook = Callable[["DataFreeState", int], Awaitable[None] | None]  # (state, clips answered)


def quantise(clips: Tensor) -> tuple[Tensor, np.ndarray]:
    """Float clips in [0, 1] -> (the same values rounded to uint8 levels with a straight-through
    gradient, the uint8 clips as NumPy)."""
    levels = torch.round(clips.detach().clamp(0.0, 1.0) * 255.0)
    rounded = clips + (levels / 255.0 - clips).detach()
    return rounded, levels.to(torch.uint8).numpy()


def student_input(clips: Tensor, prep: StudentPreprocessing) -> Tensor:
    """:func:`~attacker.students.student_preprocess` for float clips (B, T, H, W, 3) in [0, 1],
    differentiable: frame sampling, bilinear resize, normalisation -> (B, 3, T', H', W')."""
    n, t, h, w, _ = clips.shape
    if t != prep.frames:
        clips = clips.index_select(1, segment_middle_indices(t, prep.frames))
    x = clips.reshape(n * prep.frames, h, w, 3).permute(0, 3, 1, 2)
    if (h, w) != (prep.height, prep.width):
        x = F.interpolate(
            x, size=(prep.height, prep.width), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(prep.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype).view(1, 3, 1, 1)
    x = ((x - mean) / std).reshape(n, prep.frames, 3, prep.height, prep.width)
    return x.permute(0, 2, 1, 3, 4).contiguous()


def student_loss(logits: Tensor, target: Tensor, *, kind: str, temperature: float) -> Tensor:
    """L1 between logits (the target mean-centred), or KL(target || student) at a temperature."""
    if kind == "l1":
        return (logits - target).abs().mean()
    t = temperature
    return F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(target / t, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)


@dataclass
class DataFreeState:
    """Everything a resumed run needs (see :meth:`state_dict`)."""

    generator: VideoGenerator
    student: StudentModel
    generator_opt: torch.optim.Optimizer
    student_opt: torch.optim.Optimizer
    rng: torch.Generator
    rounds: int = 0
    clips: int = 0  # answers (paid or cached) consumed by the loop so far
    history: list[dict[str, float]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "student": self.student.state_dict(),
            "generator_opt": self.generator_opt.state_dict(),
            "student_opt": self.student_opt.state_dict(),
            "rng": self.rng.get_state(),
            "rounds": self.rounds,
            "clips": self.clips,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.student.load_state_dict(state["student"])
        self.generator_opt.load_state_dict(state["generator_opt"])
        self.student_opt.load_state_dict(state["student_opt"])
        self.rng.set_state(state["rng"])
        self.rounds = int(state["rounds"])
        self.clips = int(state["clips"])
        self.history = [dict(h) for h in state["history"]]


def new_state(
    settings: DataFreeSection, generator: VideoGenerator, student: StudentModel, *, seed: int
) -> DataFreeState:
    """Fresh optimisers (Adam for the generator, AdamW for the student) and a seeded RNG."""
    rng = torch.Generator().manual_seed(seed)
    return DataFreeState(
        generator=generator,
        student=student,
        generator_opt=torch.optim.Adam(
            generator.parameters(), lr=settings.generator_lr, betas=(0.5, 0.999)
        ),
        student_opt=torch.optim.AdamW(student.parameters(), lr=settings.student_lr),
        rng=rng,
    )


class DataFreeLoop:
    def __init__(
        self,
        settings: DataFreeSection,
        state: DataFreeState,
        oracle: PaidOracle,
        *,
        mode: OutputMode | str,
        num_classes: int,
    ) -> None:
        self.s = settings
        self.state = state
        self.oracle = oracle
        self.mode = OutputMode(mode)
        self.num_classes = num_classes
        self.prep = state.student.student_config.preprocessing
        self.replay = ReplayBuffer(settings.replay_size) if settings.replay_size > 0 else None

    async def run(
        self,
        *,
        on_round: RoundHook | None = None,
        on_checkpoint: Callable[[DataFreeState], None] | None = None,
    ) -> DataFreeState:
        """Rounds until the oracle stops; ``on_checkpoint`` every ``checkpoint_every`` clips and
        at the end, ``on_round`` after every round."""
        state = self.state
        next_checkpoint = state.clips + self.s.checkpoint_every
        while self.oracle.remaining > 0:
            started = time.perf_counter()
            log: dict[str, float] = {"round": float(state.rounds)}
            if self.s.train_generator and self.oracle.remaining >= self.s.generator_queries:
                ok = await self._generator_step(log)
            else:  # not enough left for a whole generator step: spend the rest on the student
                ok = True
            for _ in range(self.s.student_steps):
                if not ok or self.oracle.remaining == 0:
                    break
                ok = await self._student_step(log)
            if self.s.student_steps == 0 and (
                not self.s.train_generator or self.oracle.remaining < self.s.generator_queries
            ):
                ok = await self._student_step(log)
            self._replay_steps(log)
            state.rounds += 1
            state.clips = self.oracle.stats.clips
            log["clips"] = float(state.clips)
            log["seconds"] = time.perf_counter() - started
            state.history.append(log)
            if on_round is not None:
                pending = on_round(state, state.clips)
                if pending is not None:
                    await pending
            if on_checkpoint is not None and state.clips >= next_checkpoint:
                on_checkpoint(state)
                next_checkpoint = state.clips + self.s.checkpoint_every
            if not ok:
                break
        if on_checkpoint is not None:
            on_checkpoint(state)
        return state

    def _recipes(self, role: str, count: int, **extra: int) -> list[dict[str, Any]]:
        base = {"source": "datafree", "round": self.state.rounds, "role": role, **extra}
        return [{**base, "row": i} for i in range(count)]

    async def _generator_step(self, log: dict[str, float]) -> bool:
        s, state = self.s, self.state
        generator, student = state.generator, state.student
        generator.train()
        student.train()
        z = generator.sample_latent(s.batch, state.rng)
        clips = generator(z)
        rounded, base = quantise(clips)
        probes, deltas = lattice_probes(
            torch.from_numpy(base), directions=s.directions, step=s.step_levels, generator=state.rng
        )
        flat = probes.reshape(-1, *base.shape[1:]).numpy()
        recipes = self._recipes("generated", s.batch) + [
            {**r, "direction": j}
            for r in self._recipes("probe", s.batch)
            for j in range(s.directions)
        ]
        answers = await self.oracle.answer(np.concatenate([base, flat]), recipes)
        if not answers.complete:
            return False
        v = answer_logits(answers.results, self.mode, self.num_classes, floor=s.probability_floor)
        v0, vp = v[: s.batch], v[s.batch :].view(s.batch, s.directions, -1)

        logits = student(student_input(rounded, self.prep))
        disagreement = (logits - v0).abs().mean(dim=1)  # B
        sign = torch.sign(logits.detach() - v0)
        psi0 = (sign * v0).sum(dim=1)
        psip = (sign.unsqueeze(1) * vp).sum(dim=2)
        victim_grad = forward_difference_gradient(
            psi0, psip, deltas, step=s.step_levels / 255.0
        )  # d(sign . v)/dx per clip
        # Generator loss: -D (+ the class-balance term). dD/dx = sign . (ds/dx - dv/dx) / C: the
        # student's part flows through autograd; the victim's enters as a linear surrogate.
        balance = torch.softmax(logits, dim=1).mean(dim=0)
        neg_entropy = (balance * torch.log(balance + 1e-8)).sum()
        surrogate = (victim_grad * rounded).sum() / (s.batch * self.num_classes)
        loss = -disagreement.mean() + surrogate + s.diversity * neg_entropy
        state.generator_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(generator.parameters(), 5.0)
        state.generator_opt.step()
        state.student_opt.zero_grad(set_to_none=True)

        log["disagreement"] = float(disagreement.detach().mean())
        log["batch_agreement"] = float((logits.argmax(1) == v0.argmax(1)).float().mean())
        log["victim_class_entropy"] = _class_entropy(v0.argmax(1), self.num_classes)
        log["zo_grad_norm"] = float(victim_grad.norm() / s.batch)
        # The generated clips are answered already: one student step on them, for free.
        log["student_loss"] = self._train_student(torch.from_numpy(base), v0)
        self._remember(torch.from_numpy(base), v0)
        if s.student_on_probes:
            self._train_student(probes.reshape(-1, *base.shape[1:]), vp.reshape(-1, v.shape[1]))
        return True

    async def _student_step(self, log: dict[str, float]) -> bool:
        s, state = self.s, self.state
        state.generator.train()
        with torch.no_grad():
            _, clips = quantise(
                state.generator(state.generator.sample_latent(s.student_batch, state.rng))
            )
        answers = await self.oracle.answer(clips, self._recipes("student", len(clips)))
        if not answers.results:
            return False
        count = len(answers.results)
        v = answer_logits(answers.results, self.mode, self.num_classes, floor=s.probability_floor)
        log["student_loss"] = self._train_student(torch.from_numpy(clips[:count]), v)
        self._remember(torch.from_numpy(clips[:count]), v)
        return answers.complete

    def _remember(self, clips: Tensor, target: Tensor) -> None:
        if self.replay is not None:
            self.replay.add(clips, target)

    def _replay_steps(self, log: dict[str, float]) -> None:
        """Extra student steps on answers already paid for (no query)."""
        if self.replay is None or len(self.replay) < self.s.student_batch:
            return
        for _ in range(self.s.replay_steps):
            clips, target = self.replay.sample(self.s.student_batch, self.state.rng)
            log["replay_loss"] = self._train_student(clips, target)

    def _train_student(self, clips: Tensor, target: Tensor) -> float:
        student = self.state.student
        student.train()
        progress = self.oracle.stats.clips / max(1, self.oracle.target)
        for group in self.state.student_opt.param_groups:
            group["lr"] = scheduled_lr(self.s.student_lr, self.s.student_schedule, progress)
        x = student_input(clips.to(torch.float32).div_(255.0), self.prep)
        loss = student_loss(
            student(x), target, kind=self.s.student_loss, temperature=self.s.temperature
        )
        self.state.student_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), 2.0)
        self.state.student_opt.step()
        return float(loss.detach())


def scheduled_lr(base: float, schedule: str, progress: float, *, floor: float = 0.05) -> float:
    """``base`` (constant), or its cosine decay to ``floor x base`` as ``progress`` (the share of
    the run's clips answered so far) goes from 0 to 1."""
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    p = min(1.0, max(0.0, progress))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def _class_entropy(classes: Tensor, num_classes: int) -> float:
    """Entropy (nats) of the classes' histogram: how many victim classes the batch reaches."""
    counts = torch.bincount(classes, minlength=num_classes).to(torch.float64)
    p = counts / counts.sum()
    return float(-(p[p > 0] * p[p > 0].log()).sum())
