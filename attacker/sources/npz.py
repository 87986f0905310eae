"""Clips stored in a .npz (``python -m shared.synthactions`` writes one) or a .npy file.

Files load with ``allow_pickle=False``. A .npy is memory-mapped; in a .npz the clips member is
read as a stream, one clip at a time, straight from the zip (compressed or not), so a large file
is never decompressed into memory whole. Labels (a small 1-D array) are read when present.
Clips at another shape than the requested one are resized (uniform frame sampling, centre crop).

Recipe: ``{"source": "npz", "path", "key", "index", "shape"}``. Re-creating clip ``i`` of a
compressed .npz decompresses the member up to that clip (cost grows with ``i``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from attacker.sources._base import (
    RECIPE_VERSION,
    ClipShape,
    QueryClip,
    SourceConfigBase,
    SourceError,
    finish_clip,
)
from attacker.sources._resample import resize_clip
from attacker.sources.registry import register_source

__all__ = ["ClipFile", "NpzConfig", "NpzSource", "read_npz_clip"]


class NpzConfig(SourceConfigBase):
    """Clips (N, T, H, W, 3) uint8 from a .npz (as ``python -m shared.synthactions`` writes) or a
    .npy file, read one clip at a time. Labels come from ``labels_key`` when the file has it."""

    kind: Literal["npz"] = "npz"
    path: Path
    clips_key: str = "clips"
    labels_key: str | None = "labels"


class ClipFile:
    """Sequential (and seekable) reader of a ``(N, T, H, W, 3)`` uint8 array in a .npy/.npz."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self._stack = ExitStack()
        self._mmap: np.ndarray | None = None
        self._stream: IO[bytes] | None = None
        self._data_start = 0
        self._next = 0
        self.count = 0
        self.clip_shape: tuple[int, int, int, int] = (0, 0, 0, 0)
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise

    def _open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"npz: file {str(self.path)!r} does not exist")
        try:
            if self.path.suffix.lower() == ".npy":
                array = np.load(self.path, mmap_mode="r", allow_pickle=False)
                self._check(array.shape, array.dtype, fortran=not array.flags.c_contiguous)
                self._mmap = array
                return
            archive = self._stack.enter_context(zipfile.ZipFile(self.path))
            member = f"{self.key}.npy"
            if member not in archive.namelist():
                keys = sorted(n.removesuffix(".npy") for n in archive.namelist())
                raise SourceError(f"npz: {str(self.path)!r} has no array {self.key!r} (has {keys})")
            stream = self._stack.enter_context(archive.open(member))
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise SourceError(f"npz: unsupported .npy format version {version}")
            self._check(shape, dtype, fortran=fortran)
            self._stream = stream
            self._data_start = stream.tell()
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"npz: cannot read {str(self.path)!r}: {exc}") from None

    def _check(self, shape: tuple[int, ...], dtype: np.dtype[Any], *, fortran: bool) -> None:
        if dtype != np.uint8 or len(shape) != 5 or shape[-1] != 3:
            raise SourceError(
                f"npz: {self.key!r} in {str(self.path)!r} must be uint8 (N, T, H, W, 3), "
                f"got {dtype} {shape}"
            )
        if fortran and shape[0] > 1:
            raise SourceError(f"npz: {self.key!r} in {str(self.path)!r} is Fortran-ordered")
        self.count = int(shape[0])
        self.clip_shape = (shape[1], shape[2], shape[3], shape[4])

    @property
    def clip_bytes(self) -> int:
        return int(np.prod(self.clip_shape))

    def read(self, index: int) -> np.ndarray:
        """Clip ``index`` as a new uint8 array (fast when reading in order)."""
        if not 0 <= index < self.count:
            raise SourceError(f"npz: clip {index} is out of range (the file has {self.count})")
        if self._mmap is not None:
            return np.array(self._mmap[index], dtype=np.uint8, order="C")
        assert self._stream is not None
        if index != self._next:
            self._stream.seek(self._data_start + index * self.clip_bytes)
        flat = np.empty(self.clip_bytes, dtype=np.uint8)
        got = 0
        while got < flat.size:
            chunk = self._stream.read(flat.size - got)
            if not chunk:
                raise SourceError(f"npz: {str(self.path)!r} is truncated at clip {index}")
            flat[got : got + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            got += len(chunk)
        self._next = index + 1
        return flat.reshape(self.clip_shape)

    def close(self) -> None:
        self._mmap = None
        self._stack.close()

    def __enter__(self) -> ClipFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_labels(path: Path, key: str | None, count: int) -> np.ndarray | None:
    if key is None or path.suffix.lower() == ".npy":
        return None
    with np.load(path, allow_pickle=False) as archive:
        if key not in archive.files:
            return None
        labels = np.asarray(archive[key])
    if labels.ndim != 1 or labels.shape[0] != count or labels.dtype.kind not in "iu":
        raise SourceError(
            f"npz: labels {key!r} must be {count} integers, got {labels.dtype} {labels.shape}"
        )
    return labels


def read_npz_clip(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
    """Clip ``index`` of the file a recipe names, read again and resized to ``shape``."""
    with ClipFile(Path(recipe["path"]), str(recipe["key"])) as clips:
        return finish_clip(resize_clip(clips.read(int(recipe["index"])), shape), shape)


@register_source("npz", config=NpzConfig, render=read_npz_clip)
class NpzSource:
    """The clips of a .npz/.npy file in order (finite)."""

    def __init__(self, config: NpzConfig, *, shape: ClipShape, seed: int) -> None:
        del seed  # the file's order is the order
        self.name = "npz"
        self.config = config
        self.shape = shape
        self.path = config.path.resolve()
        with ClipFile(self.path, config.clips_key) as clips:  # fail early on a bad file
            self.count = clips.count
        self.labels = _read_labels(self.path, config.labels_key, self.count)

    def __iter__(self) -> Iterator[QueryClip]:
        with ClipFile(self.path, self.config.clips_key) as clips:
            for index in range(clips.count):
                clip = finish_clip(resize_clip(clips.read(index), self.shape), self.shape)
                recipe = {
                    "v": RECIPE_VERSION,
                    "source": "npz",
                    "path": str(self.path),
                    "key": self.config.clips_key,
                    "index": index,
                    "shape": self.shape.as_list(),
                }
                label = None if self.labels is None else int(self.labels[index])
                yield QueryClip(clip=clip, recipe=recipe, true_label=label)
