"""The peer for bench/extraction.py: ART's KnockoffNets (Orekondy et al., 2019) against the same
victim, on the same pool of clips, with the same budget, student architecture and held-out clips.

ART (adversarial-robustness-toolbox, the ``bench`` extra) queries a ``BlackBoxClassifier`` whose
predict function calls the victim's HTTP API with the job's key (every answer paid, 32 clips a
request), picks ``budget`` clips at random from a pool of ``2 x budget`` stacked-affine clips
made by the attacker's own source and seed, and fits the thief with its own loop
(``PyTorchClassifier.fit``: cross-entropy, which reduces the victim's probabilities to their
argmax, and AdamW at the attacker's learning rate for the same number of passes as our
continual recipe spends on 5,000 clips). Fidelity is then measured by the attacker's own
evaluation on the same held-out clips.
"""

from __future__ import annotations

import asyncio
import itertools
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
from attacker.stages.train import build_student
from attacker.students import StudentModel, student_preprocess
from shared.codec import NPY_CONTENT_TYPE, encode_npy

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
    thief = PyTorchClassifier(
        model=wrapped,
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.AdamW(
            wrapped.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
        ),
        input_shape=input_shape,
        nb_classes=len(labels),
        clip_values=(0, 255),
        device_type="cpu",
    )
    attack = KnockoffNets(
        classifier=victim,
        batch_size_fit=config.train.batch_size,
        batch_size_query=QUERY_BATCH,
        nb_epochs=max(1, round(epochs)),
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
