"""Re-running a run: the previous transfer set already holds the clips of the query stream.

Regenerating an expensive source (or decoding videos again) only to hash the clips would make a
fully cached rerun as slow as the source. When the run directory holds a transfer set made from
the same source, seed and clip shape, its clips are replayed first (each still goes through the
cache lookup, so a lost answer is paid again, never assumed), then the live source continues
after them.

A replayed clip carries the hash its record holds (the shard it is read from is checksummed), so
it is not hashed again; and the new transfer set's writer links every shard that comes out the
same as the previous set's instead of compressing it again (see ``TransferSetWriter(reuse=)``).
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from attacker.data.transfer_set import TransferManifest, TransferSet
from attacker.sources import QueryClip

PREVIOUS_SUFFIX = ".previous"


def _same_stream(old: TransferManifest, new: TransferManifest) -> bool:
    parts = ("source", "seed", "stealth", "select")
    return old.clip_shape == new.clip_shape and all(
        old.extra.get(part) == new.extra.get(part) for part in parts
    )


def set_aside_previous(root: Path, manifest: TransferManifest) -> TransferSet | None:
    """Move a reusable transfer set at ``root`` aside (to ``root.previous``) and open it.

    Its manifest decides; its records are read once, after the move."""
    aside = root.with_name(root.name + PREVIOUS_SUFFIX)
    shutil.rmtree(aside, ignore_errors=True)
    try:
        old = TransferManifest.from_dict(json.loads((root / "manifest.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none, unreadable or another format: start from the source
    if not _same_stream(old, manifest) or old.count == 0:
        return None
    root.rename(aside)
    try:
        return TransferSet(aside)
    except (OSError, ValueError, KeyError):
        aside.rename(root)  # records that do not match the manifest: start from the source
        return None


def replay_then_live(
    previous: TransferSet | None, live: Callable[[], Iterator[QueryClip]]
) -> Iterator[QueryClip]:
    """The previous run's clips in order, then the live source from where they end."""
    replayed = 0
    if previous is not None:
        for record, clip in previous.iter_clips():
            yield QueryClip(
                clip=clip,
                recipe=record.recipe,
                true_label=record.true_label,
                clip_hash=record.clip_hash,
            )
            replayed += 1
    yield from itertools.islice(live(), replayed, None)


def discard_previous(previous: TransferSet | None) -> None:
    if previous is not None:
        shutil.rmtree(previous.root, ignore_errors=True)
