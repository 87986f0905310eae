"""What a scoreboard run covers: rows, columns, budget and benign traffic (one frozen record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from vidsteal.processes import REPO
from vidsteal.scoreboard.attacks import SCOREBOARD_ATTACKS
from vidsteal.scoreboard.defenses import SCOREBOARD_DEFENSES

__all__ = ["ScoreboardSpec", "SpecError", "default_out"]


class SpecError(ValueError):
    """A scoreboard request that cannot run; the message is one line."""


def default_out() -> Path:
    return REPO / "runs" / f"scoreboard-{datetime.now():%Y%m%d-%H%M%S}"


@dataclass(frozen=True)
class ScoreboardSpec:
    out: Path
    budget: int = 5000
    attacks: tuple[str, ...] = SCOREBOARD_ATTACKS
    defenses: tuple[str, ...] = SCOREBOARD_DEFENSES
    detectors: tuple[str, ...] | None = None  # None: every detector the victim offers
    benign: int = 10000  # benign session clips (seed 31337)
    benign_videos: int = 1000  # benign mp4 videos decoded server-side (seed 8080)
    seed: int = 0
    jobs: int = 2
    eval_clips: int = 1000  # held-out SynthActions clips (seed 424242)
    calibration_clips: int = 2000  # adaptive misinformation's tau (seed 9001)
    epochs: float | None = None  # override the recipe's training passes
    student_widths: tuple[int, ...] | None = None  # override the student's (tiny3d) widths
    small: bool = False

    @classmethod
    def small_version(cls, out: Path, **changes: Any) -> ScoreboardSpec:
        """CI-sized: two attacks, 200 queries, no defense and adaptive misinformation, every
        detector, 300 benign clips and 20 videos; 100 held-out clips, a narrow student trained
        two passes."""
        spec = cls(
            out=out,
            budget=200,
            attacks=("noise", "stacked_affine"),
            defenses=("none", "am_2pct"),
            benign=300,
            benign_videos=20,
            eval_clips=100,
            calibration_clips=400,
            epochs=2,
            student_widths=(8, 16, 32, 64),
            small=True,
        )
        return replace(spec, **changes)

    def __post_init__(self) -> None:
        unknown = [a for a in self.attacks if a not in SCOREBOARD_ATTACKS]
        if unknown:
            raise SpecError(f"unknown attacks {unknown}; known: {', '.join(SCOREBOARD_ATTACKS)}")
        unknown = [d for d in self.defenses if d not in SCOREBOARD_DEFENSES]
        if unknown:
            known = ", ".join(SCOREBOARD_DEFENSES)
            raise SpecError(f"unknown defenses {unknown}; known: {known}")
        if "none" not in self.defenses:
            raise SpecError("defenses must include none (detectors replay the undefended run)")
        if not self.attacks:
            raise SpecError("no attack to run")
        for name in ("budget", "jobs", "eval_clips", "calibration_clips"):
            if getattr(self, name) < 1:
                raise SpecError(f"--{name.replace('_', '-')} must be positive")
        if self.benign < 0 or self.benign_videos < 0:
            raise SpecError("--benign and --benign-videos must not be negative")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data
