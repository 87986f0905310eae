"""``attacker eval``: score an exported student without the attacker's training code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attacker.client import MemoryCache, ResponseCache, VictimClient, answer_identity
from attacker.client.store import open_store
from attacker.collect import Collector, MemorySink
from attacker.eval.fidelity import EvalSet, fidelity_of, student_logits
from attacker.sources import QueryClip
from attacker.students import load_exported_student


def load_labelled_npz(path: Path, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        if "clips" not in data:
            raise ValueError(f"{path} has no 'clips' array")
        clips = np.asarray(data["clips"][:n], dtype=np.uint8)
        labels = (
            np.asarray(data["labels"][:n], dtype=np.int64)
            if "labels" in data
            else np.full(len(clips), -1, dtype=np.int64)
        )
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"{path}: clips must be (N, T, H, W, 3), got {clips.shape}")
    return clips, labels


async def evaluate_exported(
    student_path: Path,
    labelled: Path,
    *,
    victim_url: str | None,
    api_key: str | None,
    redis_url: str | None,
    n: int | None,
) -> dict[str, Any]:
    model = load_exported_student(student_path)
    clips, labels = load_labelled_npz(labelled, n)
    logits = student_logits(model, clips)
    result: dict[str, Any] = {"clips": len(clips)}
    known = labels >= 0
    if known.any():
        result["accuracy"] = float((logits.argmax(1)[known] == labels[known]).mean())
    if victim_url is not None and api_key is not None:
        victim_top1, paid = await _victim_answers(clips, victim_url, api_key, redis_url)
        fidelity = fidelity_of(logits, EvalSet(clips, victim_top1, labels, paid))
        result.update(fidelity.to_dict())
        result["paid"] = paid
    return result


async def _victim_answers(
    clips: np.ndarray, url: str, api_key: str, redis_url: str | None
) -> tuple[np.ndarray, int]:
    store = open_store(redis_url) if redis_url else None
    try:
        async with VictimClient(url, api_key) as client:
            info = await client.model_info()
            identity = answer_identity(url, info)
            cache = ResponseCache(store, identity) if store is not None else MemoryCache(identity)
            remaining = (await client.budget()).remaining
            sink = MemorySink()
            collector = Collector(
                client=client,
                cache=cache,
                writer=sink,
                target_clips=len(clips),
                paid_allowance=min(len(clips), remaining),
                batch_clips=64,
                concurrency=2,
            )
            queries = (
                QueryClip(clip=c, recipe={"source": "npz", "index": i}) for i, c in enumerate(clips)
            )
            stats = await collector.run(iter(queries))
    finally:
        if store is not None:
            await store.aclose()
    if len(sink.results) < len(clips):
        raise ValueError(f"the victim answered {len(sink.results)} of {len(clips)} clips")
    return np.array([r["index"] for r in sink.results], dtype=np.int64), stats.paid
