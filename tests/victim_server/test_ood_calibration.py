"""The OOD monitor's benign calibration: shares of its clips are windows cut from longer actions
and real H.264 round trips, because benign clients cut clips from longer, encoded videos and both
shift a model's scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.synthactions import SynthActions
from victim_server.detection.calibration import (
    benign_calibration_batches,
    calibrate_ood,
    through_codec,
)
from victim_server.inference.runner import ModelRunner
from victim_server.models import create_model, model_config
from victim_server.models.config import InputSpec

SPEC = InputSpec(frames=8, height=33, width=32)


def _changed(codec: float, window: float) -> tuple[int, int]:
    raw = SynthActions(seed=5, frames=SPEC.frames, height=SPEC.height, width=SPEC.width)
    changed = total = 0
    batches = benign_calibration_batches(
        SPEC, seed=5, clips=40, batch=16, codec_fraction=codec, window_fraction=window
    )
    for start, batch in zip(range(0, 40, 16), batches, strict=True):
        expected, _ = raw.batch(start, len(batch))
        assert batch.shape == expected.shape and batch.dtype == np.uint8
        changed += sum(not np.array_equal(a, b) for a, b in zip(batch, expected, strict=True))
        total += len(batch)
    return changed, total


@pytest.mark.parametrize(
    ("codec", "window", "low", "high"),
    [(0.0, 0.0, 0, 0), (0.5, 0.0, 10, 30), (1.0, 0.0, 40, 40), (0.0, 0.5, 10, 30), (0, 1, 36, 40)],
)
def test_shares_of_the_clips_are_windows_or_h264_round_trips(
    codec: float, window: float, low: int, high: int
) -> None:
    # (a window of an action that barely moves can equal the short render: hence 36 of 40)
    changed, total = _changed(codec, window)
    assert total == 40 and low <= changed <= high


def test_windows_are_consecutive_frames_of_a_longer_action() -> None:
    (clip,) = next(
        benign_calibration_batches(
            SPEC, seed=7, clips=1, batch=1, codec_fraction=0.0, window_fraction=1.0
        )
    )
    longer = [
        SynthActions(seed=7, frames=SPEC.frames * f, height=SPEC.height, width=SPEC.width).clip(0)
        for f in (2, 3)
    ]
    assert any(
        np.array_equal(clip, render[s : s + SPEC.frames])
        for render in longer
        for s in range(len(render) - SPEC.frames + 1)
    )


def test_round_trip_keeps_shape_and_stays_close() -> None:
    clip, _ = SynthActions(seed=5, frames=8, height=33, width=31).batch(0, 1)
    decoded = through_codec(clip[0], crf=23)
    assert decoded.shape == clip[0].shape
    error = np.abs(decoded.astype(np.int16) - clip[0].astype(np.int16))
    assert 0 < error.mean() < 12  # lossy, but the same clip


def test_calibration_records_its_codec_share_and_bad_fraction_is_refused() -> None:
    torch.manual_seed(0)
    net = create_model("embedded")
    runner = ModelRunner(net, model_config(net), torch.device("cpu"))
    calibration = calibrate_ood(runner, seed=5, clips=100, batch=50)
    assert calibration.source["codec_fraction"] == 0.5
    assert calibration.source["codec_crfs"] == [18, 23, 28]
    assert calibration.source["window_fraction"] == 0.5
    assert calibration.source["clips"] == 100
    with pytest.raises(ValueError, match="codec_fraction"):
        next(
            benign_calibration_batches(
                SPEC, seed=5, clips=10, batch=5, codec_fraction=1.5, window_fraction=0.0
            )
        )
