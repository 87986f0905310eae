"""The transfer set: (clip, paid answer) records on disk, versioned, streamable.

Layout of a transfer-set directory::

    manifest.json          format version, victim identity, output mode, labels, clip shape, count
    records.jsonl          one record per clip, in query order: hash, shard, row, recipe, result,
                           true_label, paid
    clips/shard-00000.npy.zst   uint8 (n, T, H, W, 3) clips, zstd-compressed .npy (no pickle)

Shards are written whole (temp file + rename) before their records are appended, so a record
never points at a missing clip. Readers stream one shard at a time. Shards carry zstd's content
checksum, so a damaged shard fails to load instead of handing out other clips.

A writer given ``reuse=`` (the previous transfer set of the same query stream, when a run is
repeated) links each shard whose clips are, hash for hash and in order, one of that set's shards,
instead of stacking and compressing the same clips again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from attacker import fastjson
from shared.codec import ClipDecodeError, ClipLimits, decode_npy, decompress_bounded, encode_npy

FORMAT_VERSION = 1
SHARD_CLIPS = 512
ZSTD_LEVEL = 3
_SHARD_MAX_BYTES = 2**31
_SHARD_LIMITS = ClipLimits(max_clips=SHARD_CLIPS, max_decoded_bytes=_SHARD_MAX_BYTES)


@dataclass(frozen=True)
class TransferRecord:
    index: int
    clip_hash: str
    shard: int
    row: int
    recipe: dict[str, Any]
    result: dict[str, Any]  # the victim's ClipResult, as JSON
    true_label: int | None
    paid: bool

    def to_json(self) -> str:
        return fastjson.dumps(
            {
                "i": self.index,
                "hash": self.clip_hash,
                "shard": self.shard,
                "row": self.row,
                "recipe": self.recipe,
                "result": self.result,
                "true_label": self.true_label,
                "paid": self.paid,
            }
        )

    @classmethod
    def from_json(cls, line: str) -> TransferRecord:
        d = fastjson.loads(line)
        return cls(
            index=d["i"],
            clip_hash=d["hash"],
            shard=d["shard"],
            row=d["row"],
            recipe=d["recipe"],
            result=d["result"],
            true_label=d["true_label"],
            paid=d["paid"],
        )


@dataclass
class TransferManifest:
    victim: dict[str, Any]
    output: str
    labels: list[str]
    clip_shape: list[int]
    count: int = 0
    paid: int = 0
    version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "victim": self.victim,
            "output": self.output,
            "labels": self.labels,
            "clip_shape": self.clip_shape,
            "count": self.count,
            "paid": self.paid,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferManifest:
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"transfer set format {d.get('version')} is not {FORMAT_VERSION}")
        return cls(
            victim=d["victim"],
            output=d["output"],
            labels=list(d["labels"]),
            clip_shape=list(d["clip_shape"]),
            count=int(d["count"]),
            paid=int(d["paid"]),
            extra=dict(d.get("extra", {})),
        )


def _shard_path(root: Path, shard: int) -> Path:
    return root / "clips" / f"shard-{shard:05d}.npy.zst"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _link_atomic(source: Path, path: Path) -> None:
    """``path`` becomes ``source``'s content: a hard link (same file system), else a copy."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        _write_atomic(path, source.read_bytes())
        return
    tmp.replace(path)


def _decompress_shard(data: bytes) -> bytes:
    """A shard's .npy bytes. The writer's frames declare their size, so they decompress in one
    call into a buffer of exactly that size (a third faster than the bounded stream, which a
    replay pays on every shard); anything else goes through the bounded stream."""
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        declared = -1
    if not 0 <= declared <= _SHARD_MAX_BYTES:
        return decompress_bounded(data, "zstd", max_output=_SHARD_MAX_BYTES)
    try:
        return zstandard.ZstdDecompressor().decompress(
            data, max_output_size=declared, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:  # checksum, truncation, trailing bytes
        raise ClipDecodeError(f"damaged transfer-set shard: {exc}", status=400) from None


def _compress_shard(clips: list[np.ndarray]) -> bytes:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    return compressor.compress(encode_npy(np.stack(clips)))


class TransferSetWriter:
    """Appends records in query order; call :meth:`close` (or use ``with``) to finish."""

    def __init__(
        self, root: Path, manifest: TransferManifest, *, reuse: TransferSet | None = None
    ) -> None:
        self.root = root
        self.manifest = manifest
        self._reusable = _shards_by_content(reuse) if reuse is not None else {}
        self.reused_shards = 0
        (root / "clips").mkdir(parents=True, exist_ok=True)
        for stale in (root / "clips").glob("shard-*"):
            stale.unlink()
        self._records = (root / "records.jsonl").open("w", encoding="utf-8")
        self._clips: list[np.ndarray] = []
        self._pending: list[TransferRecord] = []
        self._shard = 0
        self._write_manifest()

    def __enter__(self) -> TransferSetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self,
        clip: np.ndarray,
        *,
        clip_hash: str,
        recipe: dict[str, Any],
        result: dict[str, Any],
        true_label: int | None,
        paid: bool,
    ) -> TransferRecord:
        record = TransferRecord(
            index=self.manifest.count,
            clip_hash=clip_hash,
            shard=self._shard,
            row=len(self._clips),
            recipe=recipe,
            result=result,
            true_label=true_label,
            paid=paid,
        )
        self._clips.append(clip)
        self._pending.append(record)
        self.manifest.count += 1
        self.manifest.paid += int(paid)
        if len(self._clips) >= SHARD_CLIPS:
            self._flush()
        return record

    def flush(self) -> None:
        """Write what is pending (a short shard if need be), so a reader sees every record."""
        self._flush()

    def _flush(self) -> None:
        if not self._clips:
            return
        target = _shard_path(self.root, self._shard)
        same = self._reusable.get(tuple(r.clip_hash for r in self._pending))
        if same is not None and same.is_file():
            _link_atomic(same, target)
            self.reused_shards += 1
        else:
            _write_atomic(target, _compress_shard(self._clips))
        self._records.write("".join(r.to_json() + "\n" for r in self._pending))
        self._records.flush()
        self._clips, self._pending = [], []
        self._shard += 1
        self._write_manifest()

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest.to_dict(), indent=2) + "\n"
        _write_atomic(self.root / "manifest.json", text.encode())

    def close(self) -> None:
        self._flush()
        self._records.close()
        self._write_manifest()


def _shards_by_content(transfer: TransferSet) -> dict[tuple[str, ...], Path]:
    """Each shard file of ``transfer``, keyed by its clips' hashes in row order."""
    hashes: dict[int, list[str]] = {}
    for record in transfer.records:
        rows = hashes.setdefault(record.shard, [])
        if record.row != len(rows):  # not a plain shard: never reused
            rows.append("")
        rows.append(record.clip_hash)
    return {tuple(rows): _shard_path(transfer.root, shard) for shard, rows in hashes.items()}


class TransferSet:
    """A finished transfer set: its manifest, its records, and its clips shard by shard."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest = TransferManifest.from_dict(json.loads((root / "manifest.json").read_text()))
        with (root / "records.jsonl").open(encoding="utf-8") as handle:
            self.records = [TransferRecord.from_json(line) for line in handle if line.strip()]
        if len(self.records) != self.manifest.count:
            raise ValueError(
                f"{root}: manifest counts {self.manifest.count} records, found {len(self.records)}"
            )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def shards(self) -> int:
        return 0 if not self.records else self.records[-1].shard + 1

    def load_shard(self, shard: int) -> np.ndarray:
        data = _shard_path(self.root, shard).read_bytes()
        return decode_npy(_decompress_shard(data), limits=_SHARD_LIMITS)

    def iter_clips(self, limit: int | None = None) -> Iterator[tuple[TransferRecord, np.ndarray]]:
        """(record, clip) in query order, one shard in memory at a time."""
        stop = len(self.records) if limit is None else min(limit, len(self.records))
        current, clips = -1, np.empty(0)
        for record in self.records[:stop]:
            if record.shard != current:
                current, clips = record.shard, self.load_shard(record.shard)
            yield record, clips[record.row]

    def records_by_shard(self, limit: int | None = None) -> dict[int, Sequence[TransferRecord]]:
        stop = len(self.records) if limit is None else min(limit, len(self.records))
        grouped: dict[int, list[TransferRecord]] = {}
        for record in self.records[:stop]:
            grouped.setdefault(record.shard, []).append(record)
        return dict(grouped)
