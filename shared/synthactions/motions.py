"""The motion classes of SynthActions: each draws a trajectory for one object over a clip.

A trajectory gives, per frame, the object's centre (x, y in pixels, y pointing down), angle
(radians, positive = clockwise on screen), scale (relative size) and visibility (0..1). All motion
magnitudes are drawn relative to the frame size and the clip duration, so a class means the same
thing at any clip shape. No class can be told from a single frame: appearance is drawn
independently of the class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["CLASS_NAMES", "MOTIONS", "Trajectory", "draw_trajectory"]


@dataclass(frozen=True)
class Trajectory:
    x: np.ndarray  # (T,) pixels
    y: np.ndarray  # (T,) pixels, down is positive
    angle: np.ndarray  # (T,) radians, clockwise on screen
    scale: np.ndarray  # (T,) multiplies the object's radius
    visible: np.ndarray  # (T,) 0..1


@dataclass(frozen=True)
class MotionContext:
    rng: np.random.Generator
    tau: np.ndarray  # (T,) normalised time 0..1
    size: float  # min(H, W) in pixels
    centre: tuple[float, float]  # a start position drawn near the middle of the frame
    angle0: float
    scale0: float


MotionFn = Callable[[MotionContext], Trajectory]


def _still(
    ctx: MotionContext,
    *,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    angle: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    visible: np.ndarray | None = None,
) -> Trajectory:
    ones = np.ones_like(ctx.tau)
    return Trajectory(
        x=x if x is not None else ones * ctx.centre[0],
        y=y if y is not None else ones * ctx.centre[1],
        angle=angle if angle is not None else ones * ctx.angle0,
        scale=scale if scale is not None else ones * ctx.scale0,
        visible=visible if visible is not None else ones,
    )


def _translate(dx: float, dy: float) -> MotionFn:
    def motion(ctx: MotionContext) -> Trajectory:
        distance = ctx.rng.uniform(0.35, 0.6) * ctx.size
        offset = (ctx.tau - 0.5) * distance
        return _still(ctx, x=ctx.centre[0] + dx * offset, y=ctx.centre[1] + dy * offset)

    return motion


def _rotate(direction: float) -> MotionFn:
    def motion(ctx: MotionContext) -> Trajectory:
        turn = ctx.rng.uniform(0.6, 1.3) * np.pi
        return _still(ctx, angle=ctx.angle0 + direction * turn * ctx.tau)

    return motion


def _zoom(growing: bool) -> MotionFn:
    def motion(ctx: MotionContext) -> Trajectory:
        small, large = ctx.rng.uniform(0.45, 0.65), ctx.rng.uniform(1.3, 1.6)
        start, end = (small, large) if growing else (large, small)
        return _still(ctx, scale=start * (end / start) ** ctx.tau)

    return motion


def _oscillate(dx: float, dy: float) -> MotionFn:
    def motion(ctx: MotionContext) -> Trajectory:
        amplitude = ctx.rng.uniform(0.12, 0.22) * ctx.size
        cycles = ctx.rng.uniform(1.5, 3.0)
        phase = ctx.rng.uniform(0, 2 * np.pi)
        offset = amplitude * np.sin(2 * np.pi * cycles * ctx.tau + phase)
        return _still(ctx, x=ctx.centre[0] + dx * offset, y=ctx.centre[1] + dy * offset)

    return motion


def _orbit(direction: float) -> MotionFn:
    def motion(ctx: MotionContext) -> Trajectory:
        radius = ctx.rng.uniform(0.15, 0.25) * ctx.size
        cycles = ctx.rng.uniform(0.8, 1.5)
        phase = ctx.rng.uniform(0, 2 * np.pi)
        # With y pointing down, an increasing angle in (cos, sin) turns clockwise on screen.
        theta = phase + direction * 2 * np.pi * cycles * ctx.tau
        return _still(
            ctx,
            x=ctx.centre[0] + radius * np.cos(theta),
            y=ctx.centre[1] + radius * np.sin(theta),
        )

    return motion


def _blink(ctx: MotionContext) -> Trajectory:
    cycles = ctx.rng.uniform(2.0, 4.0)
    phase = ctx.rng.uniform(0, 2 * np.pi)
    on = np.sin(2 * np.pi * cycles * ctx.tau + phase) > 0
    if on.all() or not on.any():  # guarantee at least one visible and one hidden frame
        on[: max(1, len(on) // 2)] = ~on[0]
    return _still(ctx, visible=on.astype(np.float64))


def _pulse(ctx: MotionContext) -> Trajectory:
    depth = ctx.rng.uniform(0.3, 0.45)
    cycles = ctx.rng.uniform(1.5, 3.0)
    phase = ctx.rng.uniform(0, 2 * np.pi)
    return _still(
        ctx, scale=ctx.scale0 * (1 + depth * np.sin(2 * np.pi * cycles * ctx.tau + phase))
    )


def _shake(ctx: MotionContext) -> Trajectory:
    amplitude = ctx.rng.uniform(0.04, 0.08) * ctx.size
    n = len(ctx.tau)
    jitter = ctx.rng.uniform(-1, 1, size=(2, n)) * amplitude
    wobble = ctx.rng.uniform(-0.15, 0.15, size=n)
    return _still(
        ctx,
        x=ctx.centre[0] + jitter[0],
        y=ctx.centre[1] + jitter[1],
        angle=ctx.angle0 + wobble,
    )


MOTIONS: dict[str, MotionFn] = {
    "move_right": _translate(1, 0),
    "move_left": _translate(-1, 0),
    "move_up": _translate(0, -1),
    "move_down": _translate(0, 1),
    "rotate_clockwise": _rotate(1),
    "rotate_counterclockwise": _rotate(-1),
    "zoom_in": _zoom(True),
    "zoom_out": _zoom(False),
    "oscillate_horizontal": _oscillate(1, 0),
    "oscillate_vertical": _oscillate(0, 1),
    "orbit_clockwise": _orbit(1),
    "orbit_counterclockwise": _orbit(-1),
    "blink": _blink,
    "pulse": _pulse,
    "shake": _shake,
    "stay_still": lambda ctx: _still(ctx),
}

CLASS_NAMES: tuple[str, ...] = tuple(MOTIONS)


def draw_trajectory(label: int, ctx: MotionContext) -> Trajectory:
    return MOTIONS[CLASS_NAMES[label]](ctx)
