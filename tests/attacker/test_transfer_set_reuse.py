"""A repeated run's transfer set links the previous set's shards instead of recompressing them,
and only where the clips are the same, hash for hash and in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from attacker.data import transfer_set as ts
from shared.codec import ClipDecodeError
from shared.hashing import clip_hash

MANIFEST = {"victim": {"url": "u"}, "output": "label", "labels": ["a", "b"]}


def _clips(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 4, 8, 8, 3), dtype=np.uint8)


def _write(root: Path, clips: np.ndarray, reuse: TransferSet | None = None) -> TransferSetWriter:
    manifest = TransferManifest(**MANIFEST, clip_shape=[4, 8, 8, 3])  # type: ignore[arg-type]
    with TransferSetWriter(root, manifest, reuse=reuse) as writer:
        for i, clip in enumerate(clips):
            writer.append(
                clip,
                clip_hash=clip_hash(clip),
                recipe={"i": i},
                result={"index": i % 2},
                true_label=None,
                paid=reuse is None,
            )
    return writer


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ts, "SHARD_CLIPS", 5)


@pytest.mark.usefixtures("small_shards")
def test_identical_shards_are_linked_and_read_back_the_same(tmp_path: Path) -> None:
    clips = _clips(12, seed=0)  # shards of 5, 5, 2
    _write(tmp_path / "old", clips)
    old = TransferSet(tmp_path / "old")

    writer = _write(tmp_path / "new", clips, reuse=old)

    assert writer.reused_shards == 3
    new = TransferSet(tmp_path / "new")
    for shard in range(3):
        old_file = tmp_path / "old" / "clips" / f"shard-{shard:05d}.npy.zst"
        new_file = tmp_path / "new" / "clips" / f"shard-{shard:05d}.npy.zst"
        assert new_file.read_bytes() == old_file.read_bytes()
    got = np.stack([clip for _, clip in new.iter_clips()])
    np.testing.assert_array_equal(got, clips)
    assert [r.paid for r in new.records] == [False] * 12  # the records are this run's


@pytest.mark.usefixtures("small_shards")
def test_a_shard_with_other_clips_is_written_anew(tmp_path: Path) -> None:
    clips = _clips(10, seed=0)
    _write(tmp_path / "old", clips)
    changed = clips.copy()
    changed[7] = _clips(1, seed=1)[0]  # second shard differs in one clip

    writer = _write(tmp_path / "new", changed, reuse=TransferSet(tmp_path / "old"))

    assert writer.reused_shards == 1
    got = np.stack([clip for _, clip in TransferSet(tmp_path / "new").iter_clips()])
    np.testing.assert_array_equal(got, changed)


@pytest.mark.usefixtures("small_shards")
def test_a_reordered_shard_is_not_reused(tmp_path: Path) -> None:
    clips = _clips(5, seed=0)
    _write(tmp_path / "old", clips)

    writer = _write(tmp_path / "new", clips[::-1].copy(), reuse=TransferSet(tmp_path / "old"))

    assert writer.reused_shards == 0
    got = np.stack([clip for _, clip in TransferSet(tmp_path / "new").iter_clips()])
    np.testing.assert_array_equal(got, clips[::-1])


def test_a_damaged_shard_fails_its_checksum(tmp_path: Path) -> None:
    clips = _clips(3, seed=0)
    _write(tmp_path, clips)
    shard = tmp_path / "clips" / "shard-00000.npy.zst"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ClipDecodeError):
        TransferSet(tmp_path).load_shard(0)


def test_previous_set_is_set_aside_once_and_refused_when_its_records_are_short(
    tmp_path: Path,
) -> None:
    from attacker.data.replay import set_aside_previous

    root = tmp_path / "transfer"
    _write(root, _clips(4, seed=0))
    manifest = TransferManifest(**MANIFEST, clip_shape=[4, 8, 8, 3])  # type: ignore[arg-type]

    previous = set_aside_previous(root, manifest)
    assert previous is not None and len(previous) == 4 and not root.exists()

    previous.root.rename(root)
    lines = (root / "records.jsonl").read_text().splitlines()
    (root / "records.jsonl").write_text("\n".join(lines[:3]) + "\n")  # one record lost
    assert set_aside_previous(root, manifest) is None
    assert (root / "manifest.json").is_file()  # left where it was, to be written anew
