"""Video files <-> frames with PyAV: decode_video, encode_mp4, iter_video_clips."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from shared.codec import ClipDecodeError
from shared.video import decode_video, encode_mp4, iter_video_clips

av = pytest.importorskip("av")


def moving_square(frames: int = 24, size: int = 32, side: int = 8) -> np.ndarray:
    """A bright square moving left to right, one pixel per frame, on black."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    top = (size - side) // 2
    for t in range(frames):
        left = min(t, size - side)
        video[t, top : top + side, left : left + side] = 255
    return video


def gray_ramp(frames: int, size: int = 16, step: int = 1) -> np.ndarray:
    """Frame ``t`` is flat gray ``t * step``: the frame index survives lossy coding."""
    levels = (np.arange(frames) * step).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (frames, size, size, 3)).copy()


def frame_levels(video: np.ndarray, step: int = 1) -> list[int]:
    return [round(float(frame.mean()) / step) for frame in video]


def centroid_x(frame: np.ndarray) -> float:
    weight = frame.astype(np.float64).mean(axis=-1)
    columns = np.arange(frame.shape[1])
    return float((weight.sum(axis=0) * columns).sum() / weight.sum())


@pytest.fixture(scope="module")
def square_mp4() -> bytes:
    return encode_mp4(moving_square())


def test_round_trip_shape_and_content(square_mp4: bytes) -> None:
    original = moving_square()
    decoded = decode_video(square_mp4)
    assert decoded.shape == original.shape == (24, 32, 32, 3)
    assert decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - original).mean() < 8  # lossy, but close
    centroids = [centroid_x(frame) for frame in decoded]
    assert centroids[-1] - centroids[0] > 20  # the square moved right by 23 pixels
    assert np.all(np.diff(centroids) > 0)  # and it moved every frame


def test_decode_from_a_path(tmp_path: Path, square_mp4: bytes) -> None:
    path = tmp_path / "square.mp4"
    path.write_bytes(square_mp4)
    np.testing.assert_array_equal(decode_video(path), decode_video(square_mp4))


def test_missing_path_is_not_a_clip_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_video(tmp_path / "nope.mp4")


@pytest.mark.parametrize("count", [1, 5, 8, 24, 40])
def test_uniform_sampling(count: int) -> None:
    data = encode_mp4(gray_ramp(24, step=10))
    sampled = decode_video(data, frames=count)
    assert sampled.shape == (count, 16, 16, 3)
    expected = np.linspace(0, 23, count).round().astype(int).tolist()
    assert frame_levels(sampled, step=10) == expected


def test_max_frames_read_bounds_what_is_decoded() -> None:
    data = encode_mp4(gray_ramp(24, step=10))
    assert decode_video(data, max_frames_read=10).shape[0] == 10
    assert frame_levels(decode_video(data, frames=4, max_frames_read=10), step=10) == [0, 3, 6, 9]


def test_odd_sizes_are_padded_to_even() -> None:
    video = moving_square()[:, :31, :29]
    decoded = decode_video(encode_mp4(video))
    assert decoded.shape == (24, 32, 30, 3)
    assert np.abs(decoded[:, :31, :29].astype(int) - video).mean() < 8


@pytest.mark.parametrize(
    "data", [b"", b"garbage" * 100, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200]
)
def test_garbage_is_415(data: bytes) -> None:
    with pytest.raises(ClipDecodeError) as info:
        decode_video(data, frames=4)
    assert info.value.status == 415
    assert "not a decodable video" in info.value.reason


def test_truncated_mp4_is_refused(square_mp4: bytes) -> None:
    with pytest.raises(ClipDecodeError) as info:
        decode_video(square_mp4[: len(square_mp4) // 2])
    assert info.value.status in (415, 422)


def test_audio_only_file_is_422() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x00" * 800)
    with pytest.raises(ClipDecodeError) as info:
        decode_video(buffer.getvalue())
    assert info.value.status == 422
    assert "no video stream" in info.value.reason


def test_video_without_frames_is_422() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    for frames in (None, 4):
        with pytest.raises(ClipDecodeError) as info:
            decode_video(buffer.getvalue(), frames=frames)
        assert info.value.status == 422
        assert "no frames" in info.value.reason


def test_frames_over_max_pixels_are_413(square_mp4: bytes) -> None:
    with pytest.raises(ClipDecodeError) as info:
        decode_video(square_mp4, frames=4, max_pixels=32 * 32 - 1)
    assert info.value.status == 413
    assert "32x32" in info.value.reason
    assert decode_video(square_mp4, frames=4, max_pixels=32 * 32).shape == (4, 32, 32, 3)


def test_bad_arguments_are_value_errors(square_mp4: bytes) -> None:
    with pytest.raises(ValueError):
        decode_video(square_mp4, frames=0)
    with pytest.raises(ValueError):
        encode_mp4(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError):
        encode_mp4(np.zeros((2, 8, 8), np.uint8))


# --------------------------------------------------------------------------- iter_video_clips


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "ramp.mp4"
    path.write_bytes(encode_mp4(gray_ramp(240)))  # frame t has gray level t
    return path


def test_clips_are_evenly_spaced_and_span_the_video(ramp_video: Path) -> None:
    clips = list(iter_video_clips(ramp_video, clip_len=8, clips_per_video=4))
    assert len(clips) == 4
    assert all(clip.shape == (8, 16, 16, 3) and clip.dtype == np.uint8 for clip in clips)
    levels = [frame_levels(clip) for clip in clips]
    for clip_levels in levels:
        steps = np.diff(clip_levels)
        assert np.all(np.abs(steps - 7) <= 2), clip_levels  # stride 240 // (8 * 4) = 7
    starts = [clip_levels[0] for clip_levels in levels]
    assert abs(starts[0] - 0) <= 2
    assert abs(levels[-1][-1] - 239) <= 2  # the last clip reaches the end of the video
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 3  # evenly spaced


def test_clips_are_yielded_lazily(ramp_video: Path) -> None:
    clips = iter_video_clips(ramp_video, clip_len=4, clips_per_video=3)
    first = next(clips)
    assert first.shape == (4, 16, 16, 3)
    assert frame_levels(first)[0] <= 2
    clips.close()


def test_short_video_gives_one_padded_clip(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    path.write_bytes(encode_mp4(gray_ramp(5, step=40)))
    clips = list(iter_video_clips(path, clip_len=8, clips_per_video=3))
    assert len(clips) == 1
    assert frame_levels(clips[0], step=40) == [0, 1, 2, 3, 4, 4, 4, 4]


def test_more_clips_than_fit_are_deduplicated(tmp_path: Path) -> None:
    path = tmp_path / "ten.mp4"
    path.write_bytes(encode_mp4(gray_ramp(10, step=20)))
    clips = list(iter_video_clips(path, clip_len=4, clips_per_video=20))
    firsts = [frame_levels(clip, step=20)[0] for clip in clips]
    assert firsts == sorted(set(firsts))
    assert firsts == list(range(7))  # every distinct 4-frame window of a 10-frame video


def test_iter_video_clips_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"not a video" * 10)
    with pytest.raises(ClipDecodeError) as info:
        list(iter_video_clips(path, clip_len=4, clips_per_video=2))
    assert info.value.status == 415
