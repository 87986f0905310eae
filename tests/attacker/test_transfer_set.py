"""The transfer set on disk and as a streaming dataset; the Redis answer cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from attacker.client import ResponseCache
from attacker.data import TransferDataset, TransferManifest, TransferSet, TransferSetWriter
from attacker.data import transfer_set as ts


def _write(root: Path, n: int) -> np.ndarray:
    clips = np.random.default_rng(0).integers(0, 256, size=(n, 4, 8, 8, 3), dtype=np.uint8)
    manifest = TransferManifest(
        victim={"url": "u"}, output="label", labels=["a", "b"], clip_shape=[4, 8, 8, 3]
    )
    with TransferSetWriter(root, manifest) as writer:
        for i, clip in enumerate(clips):
            writer.append(
                clip,
                clip_hash=f"h{i}",
                recipe={"i": i},
                result={"index": i % 2, "label": "ab"[i % 2]},
                true_label=None,
                paid=i % 3 == 0,
            )
    return clips


def test_round_trip_in_query_order(tmp_path: Path, monkeypatch: object) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    mp.setattr(ts, "SHARD_CLIPS", 7)  # several shards, the last one partial
    try:
        clips = _write(tmp_path, 20)
    finally:
        mp.undo()
    transfer = TransferSet(tmp_path)
    assert len(transfer) == 20 and transfer.shards == 3
    assert transfer.manifest.paid == 7
    for i, (record, clip) in enumerate(transfer.iter_clips()):
        assert record.index == i and record.recipe == {"i": i}
        np.testing.assert_array_equal(clip, clips[i])
    assert [r.index for r, _ in transfer.iter_clips(limit=5)] == [0, 1, 2, 3, 4]


def test_streaming_dataset_shuffles_per_epoch_and_covers_the_prefix(tmp_path: Path) -> None:
    _write(tmp_path, 30)
    dataset = TransferDataset(TransferSet(tmp_path), limit=25, seed=1)
    first = [int(s.result["index"]) * 1000 + int(s.clip.sum()) for s in dataset]
    dataset.set_epoch(1)
    second = [int(s.result["index"]) * 1000 + int(s.clip.sum()) for s in dataset]
    assert len(first) == 25 and sorted(first) == sorted(second) and first != second


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    import json

    import pytest

    _write(tmp_path, 3)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format 99"):
        TransferSet(tmp_path)


async def test_cache_is_keyed_by_victim_identity(redis_client: aioredis.Redis) -> None:
    from shared.hashing import victim_identity

    probs = ResponseCache(redis_client, victim_identity("http://v", "m", "probs", None))
    labels = ResponseCache(redis_client, victim_identity("http://v", "m", "label", None))
    await probs.put_many({"a1": {"index": 3}})
    assert await probs.get_many(["a1", "b2"]) == [{"index": 3}, None]
    assert await labels.get_many(["a1"]) == [None]
