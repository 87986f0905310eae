"""Query streams the detectors are judged on: mp4 folders made here, realistic benign sessions,
and an attack run's paid queries replayed in the order and batch sizes they were sent."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from attacker.active import round_sizes
from attacker.data import TransferSet
from attacker.sources import ClipShape, QueryClip, build_source
from shared.synthactions import NUM_CLASSES, SynthActions
from shared.video import encode_mp4

__all__ = ["paid_batches", "realistic_benign", "request_sizes", "video_folder", "write_prefix"]


def video_folder(root: Path, *, seed: int, videos: int, layered: bool) -> Path:
    """mp4 files in UCF101 layout: SynthActions (benign) or layered affine scenes (attack)."""
    if layered:
        source = iter(
            build_source(
                {"kind": "stacked_affine", "layered": 1.0}, shape=ClipShape(48, 64, 64), seed=seed
            )
        )
        for i in range(videos):
            folder = root / f"Scene{i % 8}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"v_Scene{i % 8}_g{i:03d}_c01.mp4").write_bytes(encode_mp4(next(source).clip))
        return root
    data = SynthActions(seed=seed, frames=48, height=64, width=64)
    for i in range(videos):
        name = data.class_names[data.label(i)]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"v_{name}_g{i:03d}_c01.mp4").write_bytes(encode_mp4(data.clip(i)))
    return root


def realistic_benign(seed: int) -> Iterator[QueryClip]:
    """Sessions of 1-8 clips of one class, as a user uploading related videos would send."""
    data = SynthActions(seed=seed)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {c: [] for c in range(NUM_CLASSES)}
    index = 0
    while True:
        label = int(rng.integers(NUM_CLASSES))
        for _ in range(int(rng.integers(1, 9))):
            while not by_class[label]:
                by_class[data.label(index)].append(index)
                index += 1
            i = by_class[label].pop(0)
            yield QueryClip(clip=data.clip(i), recipe={"seed": seed, "index": i}, true_label=label)


def request_sizes(paid: int, batch_clips: int, rounds: int = 1) -> list[int]:
    """Clips per request of a run that paid ``paid`` queries: the collector sends chunks of
    ``batch_clips`` in query order, and an active-selection run starts a chunk at each round."""
    sizes: list[int] = []
    for size in round_sizes(paid, rounds) if paid else []:
        full, rest = divmod(size, batch_clips)
        sizes += [batch_clips] * full + ([rest] if rest else [])
    return sizes


def paid_batches(transfer: Path, sizes: list[int]) -> Iterator[np.ndarray]:
    """The transfer set's paid clips (cache hits were never sent), in query order, cut into
    requests of ``sizes``; raises when the set holds another number of paid clips."""
    clips = (clip for record, clip in TransferSet(transfer).iter_clips() if record.paid)
    for size in sizes:
        batch = list(itertools.islice(clips, size))
        if len(batch) != size:
            raise ValueError(f"{transfer} holds fewer paid clips than the {sum(sizes)} replayed")
        yield np.stack(batch)
    if next(clips, None) is not None:
        raise ValueError(f"{transfer} holds more paid clips than the {sum(sizes)} replayed")


def write_prefix(transfer: Path, count: int, path: Path) -> Path:
    """The transfer set's first ``count`` paid clips, in query order, as a .npz (``clips``) that
    the attacker's npz source reads back clip for clip (same bytes, so the same cached answers)."""
    clips = [clip for record, clip in TransferSet(transfer).iter_clips() if record.paid][:count]
    if len(clips) != count:
        raise ValueError(f"{transfer} holds {len(clips)} paid clips, not {count}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, clips=np.stack(clips))
    return path
