"""The transfer measurement: starting clips -> PGD on the clone and the noise control -> the
victim's answers (paid, cached) -> success rates.

Definitions (also written into every report):

- starting clips: ``n`` held-out SynthActions clips (the victim's own distribution, a seed no
  other part of the range uses) with their true labels;
- transfer success rate: among the starting clips the victim labels correctly, the fraction
  whose adversarial version it labels otherwise (untargeted); ``transfer_where_clone_correct``
  restricts this to clips both the victim and the clone label correctly;
- noise control: the same, for the clip plus random +-floor(eps) sign noise (same L-inf norm,
  same perturbation model);
- clone white-box rate: among clips the clone labels correctly, the fraction PGD flips on the
  clone itself (free: computed locally).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from attacker.adversarial.answers import VictimAnswers, victim_top1
from attacker.adversarial.differentiable import LogitsFn, student_logits_fn
from attacker.adversarial.options import PGDOptions
from attacker.adversarial.pgd import integer_radius, pgd_linf, sign_noise
from attacker.adversarial.rates import flip_rate, ratio_vs_control
from attacker.client import VictimClient
from attacker.collect import AnswerCache
from attacker.sources import ClipShape, build_source
from attacker.sources.synth import SynthActionsConfig
from attacker.students import StudentModel, predict

DEFINITION = (
    "transfer success rate = among starting clips the victim labels correctly, the fraction "
    "whose perturbed version the victim labels otherwise (untargeted); the noise control is "
    "measured the same way with random +-floor(eps) sign noise of the same L-inf norm and "
    "perturbation model; eps in pixel units of 0..255"
)


@dataclass(frozen=True)
class StartingClips:
    clips: np.ndarray  # uint8 (N, T, H, W, 3)
    labels: np.ndarray  # (N,) int64 true labels
    source: dict[str, Any]


def starting_clips(shape: ClipShape, n: int, source_seed: int) -> StartingClips:
    """The first ``n`` clips of SynthActions ``source_seed`` at the victim's clip shape."""
    if n < 1:
        raise ValueError(f"need at least one starting clip, got n={n}")
    config = SynthActionsConfig.model_validate({"seed": source_seed, "labelled": True})
    queries = list(itertools.islice(iter(build_source(config, shape=shape, seed=0)), n))
    return StartingClips(
        clips=np.stack([q.clip for q in queries]),
        labels=np.array([q.true_label for q in queries], dtype=np.int64),
        source=config.model_dump(mode="json"),
    )


def craft(
    logits_fn: LogitsFn,
    start: StartingClips,
    options: PGDOptions,
    *,
    seed: int,
    show_progress: bool = False,
) -> np.ndarray:
    """PGD clips for every starting clip (deterministic for a seed and torch thread count)."""
    generator = torch.Generator().manual_seed(seed)
    label = f"PGD eps={options.eps:g} {options.perturbation}"
    with tqdm(total=len(start.clips), desc=label, unit="clip", disable=not show_progress) as bar:
        return pgd_linf(
            logits_fn, start.clips, start.labels, options, generator=generator, on_batch=bar.update
        )


def noise_control(start: StartingClips, options: PGDOptions, *, seed: int) -> np.ndarray:
    code = 0 if options.perturbation == "per-frame" else 1
    rng = np.random.default_rng([seed, round(options.eps * 1000), code, 0x5E])
    return sign_noise(start.clips, options.eps, options.perturbation, rng)


def max_change(clean: np.ndarray, perturbed: np.ndarray) -> int:
    return int(np.abs(perturbed.astype(np.int16) - clean.astype(np.int16)).max())


async def measure_transfer(
    student: StudentModel,
    start: StartingClips,
    settings: Sequence[PGDOptions],
    *,
    client: VictimClient,
    cache: AnswerCache,
    seed: int,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Craft every setting's PGD and noise clips, pay for the victim's answers to them and the
    starting clips in one budget-checked pass, and compute the rates."""
    started = time.perf_counter()
    fn = student_logits_fn(student)
    clone_clean = predict(student, start.clips).argmax(1)
    crafted: list[tuple[PGDOptions, np.ndarray, np.ndarray]] = []
    for options in settings:
        adversarial = craft(fn, start, options, seed=seed, show_progress=show_progress)
        crafted.append((options, adversarial, noise_control(start, options, seed=seed)))
    craft_seconds = time.perf_counter() - started
    batch = np.concatenate([start.clips, *(c for _, a, z in crafted for c in (a, z))])
    answers = await victim_top1(batch, client=client, cache=cache, show_progress=show_progress)
    n = len(start.clips)
    victim_clean = answers.top1[:n]
    victim_ok = victim_clean == start.labels
    both_ok = victim_ok & (clone_clean == start.labels)
    results = []
    for index, (options, adversarial, noise) in enumerate(crafted):
        offset = n * (1 + 2 * index)
        victim_adv = answers.top1[offset : offset + n]
        victim_noise = answers.top1[offset + n : offset + 2 * n]
        transfer = flip_rate(victim_ok, start.labels, victim_adv)
        control = flip_rate(victim_ok, start.labels, victim_noise)
        clone_adv = predict(student, adversarial).argmax(1)
        results.append(
            {
                **options.to_dict(),
                "effective_eps": integer_radius(options.eps),
                "max_abs_change": {
                    "pgd": max_change(start.clips, adversarial),
                    "noise": max_change(start.clips, noise),
                },
                "clone_white_box": flip_rate(
                    clone_clean == start.labels, start.labels, clone_adv
                ).to_dict(),
                "transfer": transfer.to_dict(),
                "noise": control.to_dict(),
                **ratio_vs_control(transfer, control),
                "transfer_where_clone_correct": flip_rate(
                    both_ok, start.labels, victim_adv
                ).to_dict(),
                "noise_where_clone_correct": flip_rate(
                    both_ok, start.labels, victim_noise
                ).to_dict(),
            }
        )
    return {
        "definition": DEFINITION,
        "starting_clips": {
            "source": start.source,
            "n": n,
            "victim_correct": int(victim_ok.sum()),
            "clone_correct": int((clone_clean == start.labels).sum()),
            "victim_and_clone_correct": int(both_ok.sum()),
            "clone_agrees_with_victim": round(float((clone_clean == victim_clean).mean()), 4),
        },
        "results": results,
        "queries": _queries(answers),
        "craft_seconds": round(craft_seconds, 1),
    }


def _queries(answers: VictimAnswers) -> dict[str, Any]:
    return {
        "clips_asked": int(answers.top1.shape[0]),
        "distinct": answers.distinct,
        "paid": answers.paid,
        "cache_hits": answers.cache_hits,
        "requests": answers.requests,
    }
