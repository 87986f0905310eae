"""Pydantic configs of the query sources: one model per ``kind``, joined in :data:`SourceConfig`.

Every model forbids unknown fields, so a typo fails at load time. :func:`parse_source_config`
turns a mapping (e.g. a YAML section) into a config and reports a failure as one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from attacker.sources._base import SourceError

__all__ = [
    "MixConfig",
    "MixPart",
    "NoiseConfig",
    "NpzConfig",
    "SourceConfig",
    "SourceConfigError",
    "StackedAffineConfig",
    "SynthActionsConfig",
    "VideoFolderConfig",
    "parse_source_config",
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoiseConfig(_Config):
    """Noise clips.

    ``uniform`` draws from ``mean +- sqrt(3) * std`` (so mean and std are as configured) and
    ``gaussian`` from ``N(mean, std)``; both are clipped to [0, 255] and rounded. ``iid`` draws
    every pixel, channel and frame independently. ``smooth`` draws a coarse random lattice (cells
    of a few pixels, per channel), interpolates it bilinearly, lets it drift at a constant random
    velocity and cross-fade into a second lattice over the clip: the clip has real motion energy,
    and each pixel still has exactly the configured distribution (before clipping).
    """

    kind: Literal["noise"] = "noise"
    distribution: Literal["uniform", "gaussian"] = "uniform"
    mean: float = Field(127.5, ge=0.0, le=255.0)
    std: float = Field(50.0, ge=0.0, le=255.0)
    temporal: Literal["iid", "smooth"] = "iid"


class StackedAffineConfig(_Config):
    """Clips made by moving, rotating and zooming one still image over time.

    ``images`` is a folder of .jpg/.jpeg/.png files (searched recursively); ``None`` uses
    procedural textures (gratings, checkerboards, blobs, shapes, colour noise, rings).
    ``max_shift`` bounds the translation as a fraction of the frame size, ``max_rotation_deg`` the
    rotation over the clip, ``zoom_range`` the scale factors. ``oscillation`` is the probability
    that a clip moves back and forth (a cosine profile) instead of in a straight line. Outside the
    image the content is mirrored (``reflect``), tiled (``wrap``) or black (``black``).
    ``layered`` is the probability that a clip is instead a layered scene: one or two textured
    sprites with their own affine trajectories over a still background.
    """

    kind: Literal["stacked_affine"] = "stacked_affine"
    images: Path | None = None
    max_shift: float = Field(0.3, ge=0.0, le=2.0)
    max_rotation_deg: float = Field(90.0, ge=0.0, le=360.0)
    zoom_range: tuple[float, float] = (0.7, 1.4)
    oscillation: float = Field(0.25, ge=0.0, le=1.0)
    border: Literal["reflect", "wrap", "black"] = "reflect"
    # Probability that a clip is layered: textured sprites moving over a still background
    # (see attacker/sources/sprites.py) instead of one whole-frame warp.
    layered: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("zoom_range")
    @classmethod
    def _zoom_ok(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.05 <= low <= high <= 20.0:
            raise ValueError("zoom_range must be (low, high) with 0.05 <= low <= high <= 20")
        return value


VideoLayout = Literal["auto", "ucf101", "hmdb51", "kinetics", "flat"]


class VideoFolderConfig(_Config):
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


class SynthActionsConfig(_Config):
    """The embedded victim's own distribution (grey box): SynthActions clips ``offset, offset+1,
    ...`` of ``seed``, rendered at the victim's clip shape. ``labelled`` attaches the true label.
    """

    kind: Literal["synthactions"] = "synthactions"
    seed: int = Field(ge=0)
    offset: int = Field(0, ge=0)
    labelled: bool = True
    difficulty: float = Field(1.0, ge=0.0, le=1.0)


class NpzConfig(_Config):
    """Clips (N, T, H, W, 3) uint8 from a .npz (as ``python -m shared.synthactions`` writes) or a
    .npy file, read one clip at a time. Labels come from ``labels_key`` when the file has it."""

    kind: Literal["npz"] = "npz"
    path: Path
    clips_key: str = "clips"
    labels_key: str | None = "labels"


class MixPart(_Config):
    """One part of a mix: a source and its (relative, positive) weight."""

    source: SourceConfig
    weight: float = Field(gt=0.0)
    name: str | None = None


class MixConfig(_Config):
    """Several sources interleaved by weight, on a fixed schedule (largest deficit first), so any
    prefix of the stream keeps the proportions to within one clip per part.

    When a finite part runs out, ``on_exhausted="stop"`` ends the mix and ``"continue"`` goes on
    with the other parts.
    """

    kind: Literal["mix"] = "mix"
    parts: tuple[MixPart, ...] = Field(min_length=1)
    on_exhausted: Literal["stop", "continue"] = "stop"

    @model_validator(mode="after")
    def _names_unique(self) -> MixConfig:
        names = [part.name for part in self.parts if part.name is not None]
        if len(names) != len(set(names)):
            raise ValueError(f"mix part names must be unique, got {names}")
        return self


SourceConfig = Annotated[
    NoiseConfig
    | StackedAffineConfig
    | VideoFolderConfig
    | SynthActionsConfig
    | NpzConfig
    | MixConfig,
    Field(discriminator="kind"),
]

MixPart.model_rebuild()
MixConfig.model_rebuild()

_ADAPTER: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)


class SourceConfigError(SourceError):
    """A source config failed validation; the message is one line naming the field."""


def parse_source_config(data: Mapping[str, Any] | BaseModel) -> SourceConfig:
    """Validate a mapping (or an already-built config) as a :data:`SourceConfig`."""
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise SourceConfigError(one_line(exc)) from exc


def one_line(exc: ValidationError) -> str:
    """``"source config: <loc>: <message>; ..."`` for every error of ``exc``."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "<root>"
        problems.append(f"{loc}: {error['msg']}")
    return "source config: " + "; ".join(problems)
