"""Real video folders (UCF101, HMDB51, Kinetics or flat layouts), decoded one video at a time.

Discovery walks ``root`` recursively for files with the configured extensions (hidden files such
as macOS ``._x.avi`` are ignored) and sorts them by relative path; the order is then shuffled by
the seed. Layouts only decide what a path says about its video:

- ``ucf101``: ``root/<Class>/v_<Class>_gXX_cYY.avi``; class = parent folder; meta = group, clip.
- ``hmdb51``: ``root/<class>/<video>.avi``; class = parent folder.
- ``kinetics``: ``root/[<split>/]<class>/<youtube id>_<start>_<end>.mp4``; class = parent
  folder; meta = youtube_id, start, end and split (the folder above the class, if any).
- ``flat``: ``root/*.mp4``; no class.
- ``auto``: ``flat`` when every video sits directly in ``root``, else ``ucf101`` or
  ``kinetics`` when most file names follow that pattern, else ``hmdb51`` (class folders).

The class folder name is recorded in the recipe; it is not the victim's label space, so
``true_label`` stays ``None``. Each video gives up to ``clips_per_video`` clips via
:func:`shared.video.iter_video_clips` (``clip_len`` = the clip shape's frames, spread over the
video), resized to the clip shape. A video PyAV cannot read is skipped with a warning.

Recipe: ``{"source": "video_folder", "seed", "shape", "root", "path", "relpath", "layout",
"class_name", "meta", "video_index", "clip", "clips_per_video", "resize", "max_pixels"}``;
re-creating decodes the file again and takes clip number ``clip``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
from pydantic import Field, field_validator

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

__all__ = [
    "VideoEntry",
    "VideoFolderConfig",
    "VideoFolderSource",
    "VideoLayout",
    "discover_videos",
    "read_video_clip",
]

logger = logging.getLogger(__name__)

_SHUFFLE_STREAM: Final = 31
_UCF_NAME: Final = re.compile(r"^v_(?P<action>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)$")
_KINETICS_NAME: Final = re.compile(
    r"^(?P<youtube_id>[A-Za-z0-9_-]{11})_(?P<start>\d+)_(?P<end>\d+)$"
)

VideoLayout = Literal["auto", "ucf101", "hmdb51", "kinetics", "flat"]
ResolvedLayout = Literal["ucf101", "hmdb51", "kinetics", "flat"]


class VideoFolderConfig(SourceConfigBase):
    """Real videos under ``root``, found recursively, ``clips_per_video`` clips from each.

    ``layout`` says how a path names its class (the parent folder in ``ucf101``, ``hmdb51`` and
    ``kinetics``; none in ``flat``); ``auto`` infers it from the file names. ``resize``: ``crop``
    scales the short side to fit and crops the centre, ``squash`` scales each side on its own.
    Videos with frames over ``max_pixels`` (default 2560x1440) are skipped as unreadable.
    """

    kind: Literal["video_folder"] = "video_folder"
    root: Path
    layout: VideoLayout = "auto"
    clips_per_video: int = Field(4, ge=1, le=1024)
    extensions: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv")
    shuffle: bool = True
    resize: Literal["crop", "squash"] = "crop"
    max_pixels: int = Field(2560 * 1440, ge=1)

    @field_validator("extensions")
    @classmethod
    def _extensions_ok(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("extensions must not be empty")
        bad = [ext for ext in value if not ext.startswith(".") or len(ext) < 2]
        if bad:
            raise ValueError(f"extensions must look like '.mp4', got {bad}")
        return tuple(ext.lower() for ext in value)


@dataclass(frozen=True)
class VideoEntry:
    """One video found under the root."""

    path: Path  # absolute
    relpath: str  # POSIX, relative to the root
    class_name: str | None
    meta: dict[str, Any] = field(default_factory=dict)


def discover_videos(
    root: Path, *, extensions: tuple[str, ...], layout: VideoLayout
) -> tuple[ResolvedLayout, list[VideoEntry]]:
    """The layout (``auto`` resolved) and every video under ``root``, sorted by relative path."""
    if not root.is_dir():
        raise SourceError(f"video_folder: root {str(root)!r} is not a folder")
    root = root.resolve()
    wanted = {ext.lower() for ext in extensions}
    relpaths = sorted(
        path.relative_to(root)
        for path in root.rglob("*")
        if path.suffix.lower() in wanted and not path.name.startswith(".") and path.is_file()
    )
    if not relpaths:
        raise SourceError(
            f"video_folder: no videos ({', '.join(sorted(wanted))}) under {str(root)!r}"
        )
    resolved = _resolve_layout(relpaths) if layout == "auto" else layout
    if layout == "auto":
        logger.info("video_folder: %s looks like a %s layout", root, resolved)
    return resolved, [_entry(root, rel, resolved) for rel in relpaths]


def _resolve_layout(relpaths: list[Path]) -> ResolvedLayout:
    nested = [rel for rel in relpaths if len(rel.parts) >= 2]
    if not nested:
        return "flat"
    ucf = sum(1 for rel in nested if _UCF_NAME.match(rel.stem))
    kinetics = sum(1 for rel in nested if _KINETICS_NAME.match(rel.stem))
    if 2 * ucf > len(nested):
        return "ucf101"
    if 2 * kinetics > len(nested):
        return "kinetics"
    return "hmdb51"


def _entry(root: Path, rel: Path, layout: ResolvedLayout) -> VideoEntry:
    class_name = rel.parts[-2] if layout != "flat" and len(rel.parts) >= 2 else None
    meta: dict[str, Any] = {}
    if layout == "ucf101" and (match := _UCF_NAME.match(rel.stem)):
        meta = {"group": int(match["group"]), "clip": int(match["clip"])}
    elif layout == "kinetics":
        if match := _KINETICS_NAME.match(rel.stem):
            meta = {
                "youtube_id": match["youtube_id"],
                "start": int(match["start"]),
                "end": int(match["end"]),
            }
        if len(rel.parts) >= 3:
            meta["split"] = rel.parts[-3]
    return VideoEntry(path=root / rel, relpath=rel.as_posix(), class_name=class_name, meta=meta)


def read_video_clip(recipe: dict[str, Any], shape: ClipShape) -> np.ndarray:
    """Decode a video-folder recipe's file again and return its clip, resized as before."""
    from shared.codec import ClipDecodeError
    from shared.video import iter_video_clips

    path = Path(recipe["path"])
    wanted = int(recipe["clip"])
    if not path.is_file():
        raise SourceError(f"video_folder: video {str(path)!r} no longer exists")
    clips = iter_video_clips(
        path,
        clip_len=shape.frames,
        clips_per_video=int(recipe["clips_per_video"]),
        max_pixels=int(recipe["max_pixels"]),
    )
    try:
        for number, raw in enumerate(clips):
            if number == wanted:
                mode = cast(Literal["crop", "squash"], recipe.get("resize", "crop"))
                return finish_clip(resize_clip(raw, shape, mode=mode), shape)
    except ClipDecodeError as exc:
        raise SourceError(f"video_folder: cannot decode {str(path)!r}: {exc}") from None
    finally:
        clips.close()
    raise SourceError(f"video_folder: {str(path)!r} has no clip number {wanted} any more")


@register_source("video_folder", config=VideoFolderConfig, render=read_video_clip)
class VideoFolderSource:
    """Clips from the videos under a folder; finite (one pass over the videos)."""

    def __init__(self, config: VideoFolderConfig, *, shape: ClipShape, seed: int) -> None:
        self.name = "video_folder"
        self.config = config
        self.shape = shape
        self.seed = seed
        self.root = config.root.resolve()
        self.layout, self.videos = discover_videos(
            config.root, extensions=config.extensions, layout=config.layout
        )

    def order(self) -> list[int]:
        """Indices into :attr:`videos` in the order they are read."""
        if not self.config.shuffle:
            return list(range(len(self.videos)))
        rng = np.random.default_rng([self.seed, _SHUFFLE_STREAM])
        return [int(i) for i in rng.permutation(len(self.videos))]

    def __iter__(self) -> Iterator[QueryClip]:
        for position, video_index in enumerate(self.order()):
            entry = self.videos[video_index]
            for number, raw in _safe_clips(entry.path, self.shape, self.config):
                clip = resize_clip(raw, self.shape, mode=self.config.resize)
                clip = finish_clip(clip, self.shape)
                yield QueryClip(clip=clip, recipe=self._recipe(entry, position, number))

    def _recipe(self, entry: VideoEntry, position: int, number: int) -> dict[str, Any]:
        return {
            "v": RECIPE_VERSION,
            "source": "video_folder",
            "seed": self.seed,
            "shape": self.shape.as_list(),
            "root": str(self.root),
            "path": str(entry.path),
            "relpath": entry.relpath,
            "layout": self.layout,
            "class_name": entry.class_name,
            "meta": dict(entry.meta),
            "video_index": position,
            "clip": number,
            "clips_per_video": self.config.clips_per_video,
            "resize": self.config.resize,
            "max_pixels": self.config.max_pixels,
        }


def _safe_clips(
    path: Path, shape: ClipShape, config: VideoFolderConfig
) -> Iterator[tuple[int, np.ndarray]]:
    """``(clip number, raw clip)`` of one video; a decoding failure ends the video with a
    warning (clips already decoded are kept)."""
    from shared.video import iter_video_clips

    clips = iter_video_clips(
        path,
        clip_len=shape.frames,
        clips_per_video=config.clips_per_video,
        max_pixels=config.max_pixels,
    )
    number = 0
    try:
        while True:
            try:
                raw = next(clips)
            except StopIteration:
                return
            except Exception as exc:  # PyAV/FFmpeg failures of one file must not stop the run
                logger.warning(
                    "video_folder: skipping unreadable video %s (after %d clips): %s",
                    path,
                    number,
                    exc,
                )
                return
            yield number, raw
            number += 1
    finally:
        clips.close()
