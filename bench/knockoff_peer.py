"""The peer for bench/extraction.py: ART's KnockoffNets (Orekondy et al., 2019) against the same
victim, on the same pool of clips, with the same budget, student architecture and held-out clips.

ART (adversarial-robustness-toolbox, the ``bench`` extra) queries a ``BlackBoxClassifier`` whose
predict function calls the victim's HTTP API with the job's key (every answer paid, 32 clips a
request), picks ``budget`` clips at random from a pool of ``2 x budget`` stacked-affine clips
made by the attacker's own source and seed, and fits the thief with its own loop
(``PyTorchClassifier.fit``: cross-entropy, which reduces the victim's probabilities to their
argmax, for the same number of passes as our continual recipe spends on 5,000 clips) with the
attacker's optimiser: AdamW at its learning rate, no weight decay on norms and biases, warm-up
then cosine per step, gradient clipping (:class:`RecipeAdamW`). With plain AdamW at a constant
6e-3 instead, the deeper student collapsed on one seed of three (top-1 0.130 at 5,000, seed 1,
at 1ae025a). Fidelity is then measured by the attacker's own evaluation on the same held-out
clips.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from typing import Any

import httpx
import numpy as np
import torch
from torch import nn

from attacker.config import AttackConfig
from attacker.eval.fidelity import evaluate
from attacker.sources import ClipShape, build_source
from attacker.stages.collect import label_eval_set
from attacker.stages.train import build_student, point_settings
from attacker.students import StudentModel, student_preprocess
from attacker.train.loop import TrainSettings, build_optimizer, cosine_factor
from shared.codec import NPY_CONTENT_TYPE, encode_npy
from shared.schemas import OutputMode

POOL_FACTOR = 2
QUERY_BATCH = 32


class RawClipStudent(nn.Module):
    """The student on ART's inputs: float clips (N, T, H, W, 3) in [0, 255]."""

    def __init__(self, student: StudentModel) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clips = x.detach().round().clamp(0, 255).to(torch.uint8)
        prep = self.student.student_config.preprocessing
        out: torch.Tensor = self.student(student_preprocess(clips, prep))
        return out


class RecipeAdamW(torch.optim.AdamW):
    """The attacker's optimiser inside ART's loop, which only calls ``step()``: the groups of
    :func:`build_optimizer`, and before each step the recipe's warm-up + cosine learning rate
    for that step and the gradient clipping of ``attacker.train.loop``."""

    def __init__(self, student: StudentModel, settings: TrainSettings, total_steps: int) -> None:
        super().__init__(build_optimizer(student, settings).param_groups)
        self._base_lrs = [group["lr"] for group in self.param_groups]
        self._total = total_steps
        self._warmup = settings.warmup_steps
        self._grad_clip = settings.grad_clip
        self._step = 0

    def step(self, closure: Any = None) -> Any:
        factor = cosine_factor(self._step, self._total, self._warmup)
        for group, base in zip(self.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * factor
        params = [p for group in self.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, self._grad_clip)
        self._step += 1
        return super().step(closure)


def _victim_predict(url: str, api_key: str) -> Any:
    client = httpx.Client(base_url=url, timeout=120)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": NPY_CONTENT_TYPE}

    def predict(x: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(x), QUERY_BATCH):
            clips = np.clip(np.rint(x[start : start + QUERY_BATCH]), 0, 255).astype(np.uint8)
            response = client.post("/v1/classify", content=encode_npy(clips), headers=headers)
            response.raise_for_status()
            out += [r["probs"] for r in response.json()["results"]]
        return np.asarray(out, dtype=np.float32)

    return predict


def run_knockoffnets(config: AttackConfig, *, epochs: float) -> list[dict[str, Any]]:
    """Spend ``config.budget`` queries with ART's KnockoffNets; one fidelity point."""
    from art.attacks.extraction import KnockoffNets
    from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier

    info = httpx.get(
        f"{config.victim.url}/v1/model",
        headers={"Authorization": f"Bearer {config.victim.api_key}"},
        timeout=30,
    ).json()
    spec = info["input"]
    shape = ClipShape(spec["frames"], spec["height"], spec["width"])
    labels = info["labels"]
    source = build_source(config.query.source, shape=shape, seed=config.seed)
    pool = np.stack(
        [q.clip for q in itertools.islice(iter(source), POOL_FACTOR * config.budget)]
    ).astype(np.float32)
    input_shape = (shape.frames, shape.height, shape.width, 3)
    victim = BlackBoxClassifier(
        _victim_predict(config.victim.url, config.victim.api_key),
        input_shape,
        len(labels),
        clip_values=(0, 255),
    )
    student = build_student(
        config, labels=labels, clip_shape=(shape.frames, shape.height, shape.width)
    )
    wrapped = RawClipStudent(student)
    nb_epochs = max(1, round(epochs))
    # ART's fit runs every batch, the last partial one too
    steps = nb_epochs * math.ceil(config.budget / config.train.batch_size)
    # ART's fit trains a cross-entropy on the argmax of the victim's probabilities: hard labels,
    # so the peer gets the recipe's rate for a hard-label loss, as our label-only attack does.
    settings = point_settings(config, steps, OutputMode.LABEL)
    thief = PyTorchClassifier(
        model=wrapped,
        loss=nn.CrossEntropyLoss(),
        optimizer=RecipeAdamW(student, settings, steps),
        input_shape=input_shape,
        nb_classes=len(labels),
        clip_values=(0, 255),
        device_type="cpu",
    )
    attack = KnockoffNets(
        classifier=victim,
        batch_size_fit=config.train.batch_size,
        batch_size_query=QUERY_BATCH,
        nb_epochs=nb_epochs,
        nb_stolen=config.budget,
        sampling_strategy="random",
        use_probability=True,
        verbose=False,
    )
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    attack.extract(x=pool, thieved_classifier=thief)
    seconds = time.perf_counter() - started
    student.eval()

    async def labelled() -> Any:
        from attacker.client.store import open_store

        store = open_store(config.redis_url)
        try:
            return await label_eval_set(config, store)
        finally:
            await store.aclose()

    eval_set = asyncio.run(labelled())
    fidelity = evaluate(student, eval_set.clips)
    return [{"queries": config.budget, **fidelity.to_dict(), "train_seconds": round(seconds, 1)}]
