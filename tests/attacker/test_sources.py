"""Query sources: determinism, shapes, recipes that re-create clips, and each source's semantics."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from attacker.sources import (
    ClipShape,
    MixConfig,
    NoiseConfig,
    QueryClip,
    QuerySource,
    SourceConfig,
    SourceConfigError,
    SourceError,
    build_source,
    parse_source_config,
    recreate_clip,
)
from attacker.sources._resample import sample_bilinear
from attacker.sources.mix import MixSource, schedule
from attacker.sources.videos import VideoFolderSource
from shared.synthactions import SynthActions
from shared.synthactions.__main__ import main as write_synthactions_npz
from shared.video import encode_mp4

SHAPE = ClipShape(frames=16, height=32, width=32)


def take(source: QuerySource, n: int) -> list[QueryClip]:
    return list(itertools.islice(source, n))


def assert_well_formed(query: QueryClip, shape: ClipShape = SHAPE) -> None:
    assert query.clip.dtype == np.uint8
    assert query.clip.shape == shape.array_shape
    assert query.clip.flags.c_contiguous
    assert json.loads(json.dumps(query.recipe)) == query.recipe  # JSON-serialisable as is


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small images of different sizes and modes, one nested, plus a non-image file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:80]
    stripes = np.stack([(xx * 5) % 256, (yy * 5) % 256, np.full_like(xx, 128)], -1)
    Image.fromarray(stripes.astype(np.uint8)).save(root / "stripes.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "noise.jpg")
    (root / "nested").mkdir()
    Image.fromarray((xx[:40, :40] * 6 % 256).astype(np.uint8), mode="L").save(
        root / "nested" / "grey.PNG"
    )
    (root / "notes.txt").write_text("not an image")
    return root


def moving_video(rng: np.random.Generator, frames: int = 40) -> np.ndarray:
    """A random texture panning right one pixel per frame, 48 x 64."""
    texture = rng.integers(0, 256, (48, 64 + frames, 3), dtype=np.uint8)
    return np.stack([texture[:, t : t + 64] for t in range(frames)])


@pytest.fixture(scope="module")
def mp4s() -> list[bytes]:
    rng = np.random.default_rng(1)
    return [encode_mp4(moving_video(rng)) for _ in range(3)]


LAYOUT_FILES: dict[str, list[str]] = {
    "ucf101": [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c03.avi",
        "Archery/v_Archery_g01_c02.avi",
    ],
    "hmdb51": [
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
        "cartwheel/Cartwheel_Tutorial_cartwheel_f_cm_np1_ri_med_1.avi",
        "cartwheel/park_cartwheel_f_cm_np1_le_med_0.avi",
    ],
    "kinetics": [
        "train/abseiling/0347ZoDXyP0_000095_000105.mp4",
        "train/air_drumming/-VtLx-mcPds_000012_000022.mp4",
        "val/abseiling/_1wThKM-aDg_000000_000010.mp4",
    ],
    "flat": ["first.mp4", "second.webm", "third.mkv"],
}


def write_videos(root: Path, relpaths: list[str], mp4s: list[bytes]) -> Path:
    """MP4 bytes under the given names (PyAV probes the content, not the extension)."""
    for relpath, data in zip(relpaths, itertools.cycle(mp4s), strict=False):
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# ------------------------------------------------------------------- common behaviour


GENERATED: dict[str, dict[str, Any]] = {
    "noise_uniform_iid": {"kind": "noise"},
    "noise_gaussian_smooth": {"kind": "noise", "distribution": "gaussian", "temporal": "smooth"},
    "noise_uniform_smooth": {"kind": "noise", "temporal": "smooth"},
    "affine_textures": {"kind": "stacked_affine"},
    "affine_black_border": {"kind": "stacked_affine", "border": "black", "zoom_range": [0.5, 0.8]},
    "affine_wrap_border": {"kind": "stacked_affine", "border": "wrap", "oscillation": 1.0},
    "synthactions": {"kind": "synthactions", "seed": 5},
    "mix": {
        "kind": "mix",
        "parts": [
            {"source": {"kind": "noise"}, "weight": 1.0},
            {"source": {"kind": "stacked_affine"}, "weight": 2.0},
        ],
    },
}


@pytest.mark.parametrize("config", GENERATED.values(), ids=GENERATED.keys())
def test_generated_sources_are_deterministic_and_recreatable(config: dict[str, Any]) -> None:
    source = build_source(config, shape=SHAPE, seed=7)
    assert isinstance(source, QuerySource)
    first = take(source, 6)
    again = take(build_source(config, shape=SHAPE, seed=7), 6)
    for query, repeat in zip(first, again, strict=True):
        assert_well_formed(query)
        assert query.recipe == repeat.recipe
        assert np.array_equal(query.clip, repeat.clip)
        recipe = json.loads(json.dumps(query.recipe))  # as a transfer set would store it
        assert np.array_equal(recreate_clip(recipe, shape=SHAPE), query.clip)
    assert len({q.clip.tobytes() for q in first}) == len(first)  # no repeats
    assert take(source, 2)[1].recipe == first[1].recipe  # iter() restarts from the first clip


@pytest.mark.parametrize("kind", ["noise", "stacked_affine"])
def test_the_seed_changes_the_clips(kind: str) -> None:
    one = take(build_source({"kind": kind}, shape=SHAPE, seed=1), 3)
    two = take(build_source({"kind": kind}, shape=SHAPE, seed=2), 3)
    for a, b in zip(one, two, strict=True):
        assert not np.array_equal(a.clip, b.clip)


def test_odd_clip_shapes_are_honoured() -> None:
    shape = ClipShape(frames=5, height=24, width=40)
    for config in GENERATED.values():
        query = next(iter(build_source(config, shape=shape, seed=0)))
        assert_well_formed(query, shape)
        assert np.array_equal(recreate_clip(query.recipe, shape=shape), query.clip)


def test_clip_shape_validation_and_conversion() -> None:
    with pytest.raises(ValueError, match="frames"):
        ClipShape(frames=0, height=32, width=32)
    with pytest.raises(ValueError, match="width"):
        ClipShape(frames=8, height=32, width=3.5)  # type: ignore[arg-type]
    assert ClipShape.of(SHAPE) == SHAPE
    assert SHAPE.array_shape == (16, 32, 32, 3)
    assert str(SHAPE) == "16x32x32"


def test_recreate_refuses_unknown_sources_and_other_shapes() -> None:
    query = next(iter(build_source({"kind": "noise"}, shape=SHAPE, seed=0)))
    with pytest.raises(SourceError, match="made at clip shape 16x32x32, not 8x32x32"):
        recreate_clip(query.recipe, shape=ClipShape(8, 32, 32))
    with pytest.raises(SourceError, match="'generator'"):
        recreate_clip({"source": "generator", "index": 0}, shape=SHAPE)
    broken = dict(query.recipe)
    del broken["seed"]
    with pytest.raises(SourceError, match="missing 'seed'"):
        recreate_clip(broken, shape=SHAPE)


def test_negative_seed_is_refused() -> None:
    with pytest.raises(SourceError, match="seed"):
        build_source({"kind": "noise"}, shape=SHAPE, seed=-1)


# --------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("temporal", ["iid", "smooth"])
@pytest.mark.parametrize("distribution", ["uniform", "gaussian"])
def test_noise_statistics_follow_the_config(distribution: str, temporal: str) -> None:
    config: dict[str, Any] = {"kind": "noise", "distribution": distribution}
    config |= {"temporal": temporal}
    config |= {"mean": 100.0, "std": 30.0}
    clips = np.stack([q.clip for q in take(build_source(config, shape=SHAPE, seed=3), 40)])
    values = clips.astype(np.float64)
    # smooth noise is correlated over many pixels: fewer independent samples, looser bounds
    tolerance = 0.5 if temporal == "iid" else 3.0
    assert abs(values.mean() - 100.0) < tolerance
    assert abs(values.std() - 30.0) < 2 * tolerance
    if distribution == "uniform":  # bounded by mean +- sqrt(3) std
        half = math.sqrt(3.0) * 30.0
        assert values.min() >= math.floor(100.0 - half)
        assert values.max() <= math.ceil(100.0 + half)
        assert values.min() < 100.0 - 0.9 * half and values.max() > 100.0 + 0.9 * half
    else:  # Gaussian: about 4.6% of values beyond 2 sigma
        beyond = np.mean(np.abs(values - 100.0) > 60.0)
        assert 0.03 < beyond < 0.065


def test_smooth_noise_is_smooth_and_moves() -> None:
    iid = next(iter(build_source({"kind": "noise"}, shape=SHAPE, seed=0))).clip.astype(float)
    smooth_source = build_source({"kind": "noise", "temporal": "smooth"}, shape=SHAPE, seed=0)
    for query in take(smooth_source, 5):
        clip = query.clip.astype(float)
        spatial = np.abs(np.diff(clip, axis=2)).mean()
        temporal = np.abs(np.diff(clip, axis=0)).mean()
        assert spatial < 0.5 * np.abs(np.diff(iid, axis=2)).mean()
        assert temporal < 0.5 * np.abs(np.diff(iid, axis=0)).mean()
        assert temporal > 1.0  # but it moves: every pair of consecutive frames differs
        assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(query.clip))


# ------------------------------------------------------------------------ stacked affine


def test_stacked_affine_clips_move() -> None:
    source = build_source({"kind": "stacked_affine"}, shape=SHAPE, seed=0)
    patterns: Counter[str] = Counter()
    for query in take(source, 24):
        clip = query.clip.astype(np.int16)
        patterns[query.recipe["image"]["texture"]] += 1
        moving = [np.abs(b - a).mean() > 0.0 for a, b in itertools.pairwise(clip)]
        assert sum(moving) >= len(moving) - 1, query.recipe  # a pingpong may pause one frame
        if query.recipe["motion"]["profile"] == "linear":
            assert np.abs(clip[-1] - clip[0]).mean() > 1.0, query.recipe
    assert len(patterns) >= 4  # varied textures


def test_a_pure_translation_shifts_the_content_exactly() -> None:
    shape = ClipShape(frames=9, height=32, width=32)  # 8 steps: every shift is a whole pixel
    source = build_source({"kind": "stacked_affine"}, shape=shape, seed=4)
    recipe = copy.deepcopy(next(iter(source)).recipe)
    recipe["motion"] = {
        "profile": "linear",
        "cycles": 1.0,
        "shift0": [0.0, 0.0],
        "shift1": [0.25, -0.125],  # 8 pixels right, 4 up over the clip
        "angle0_deg": 0.0,
        "angle1_deg": 0.0,
        "zoom0": 1.0,
        "zoom1": 1.0,
    }
    clip = recreate_clip(recipe, shape=shape)
    for t in range(2, shape.frames, 2):
        dx, dy = t, t // 2
        assert np.array_equal(clip[t][: 32 - dy, dx:], clip[0][dy:, : 32 - dx])
    assert not np.array_equal(clip[1], clip[0])


def test_rotation_sign_and_the_sampled_transform_relate_first_and_last_frames() -> None:
    shape = ClipShape(frames=4, height=32, width=32)
    source = build_source({"kind": "stacked_affine"}, shape=shape, seed=2)
    recipe = copy.deepcopy(next(iter(source)).recipe)
    recipe["motion"] = {
        "profile": "linear",
        "cycles": 1.0,
        "shift0": [0.0, 0.0],
        "shift1": [0.0, 0.0],
        "angle0_deg": 0.0,
        "angle1_deg": 90.0,
        "zoom0": 1.0,
        "zoom1": 1.0,
    }
    clip = recreate_clip(recipe, shape=shape)
    assert np.array_equal(clip[-1], np.rot90(clip[0], k=-1))  # +90 degrees: clockwise

    # Random trajectories: warping frame 0 by the recipe's transforms predicts the last frame.
    source = build_source({"kind": "stacked_affine", "oscillation": 0.0}, shape=SHAPE, seed=0)
    checked = 0
    for query in take(source, 16):
        predicted, inside = warp_first_to_last(query)
        if inside.mean() < 0.25:
            continue  # frame 0 shows too little of what the last frame shows
        last = query.clip[-1].astype(np.float32)
        first = query.clip[0].astype(np.float32)
        warped_error = np.abs(predicted - last)[inside].mean()
        unwarped_error = np.abs(first - last)[inside].mean()
        assert warped_error < 0.4 * unwarped_error, query.recipe
        checked += 1
    assert checked >= 8


def warp_first_to_last(query: QueryClip) -> tuple[np.ndarray, np.ndarray]:
    """Frame 0 resampled where the recipe says each last-frame pixel was, and a mask of last-frame
    pixels whose source lies inside frame 0."""
    motion = query.recipe["motion"]
    _, height, width = query.recipe["shape"]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    px, py = xx + 0.5 - width / 2, yy + 0.5 - height / 2

    def to_image(x: np.ndarray, y: np.ndarray, end: str) -> tuple[np.ndarray, np.ndarray]:
        angle = math.radians(motion[f"angle{end}_deg"])
        zoom = motion[f"zoom{end}"]
        dx = x - motion[f"shift{end}"][0] * width
        dy = y - motion[f"shift{end}"][1] * height
        c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
        return c * dx + s * dy, c * dy - s * dx

    qx, qy = to_image(px, py, "1")  # image point shown at each last-frame pixel
    angle0, zoom0 = math.radians(motion["angle0_deg"]), motion["zoom0"]
    x0 = zoom0 * (math.cos(angle0) * qx - math.sin(angle0) * qy) + motion["shift0"][0] * width
    y0 = zoom0 * (math.sin(angle0) * qx + math.cos(angle0) * qy) + motion["shift0"][1] * height
    us, vs = x0 + width / 2 - 0.5, y0 + height / 2 - 0.5
    inside = (us >= 1) & (us <= width - 2) & (vs >= 1) & (vs <= height - 2)
    predicted = sample_bilinear(query.clip[0].astype(np.float32), vs, us)
    return predicted, inside


def test_stacked_affine_bounds_follow_the_config() -> None:
    config: dict[str, Any] = {
        "kind": "stacked_affine",
        "max_shift": 0.1,
        "max_rotation_deg": 20.0,
        "zoom_range": [0.9, 1.1],
    }
    for query in take(build_source(config, shape=SHAPE, seed=0), 30):
        motion = query.recipe["motion"]
        assert all(abs(v) <= 0.1 for v in motion["shift0"] + motion["shift1"])
        assert abs(motion["angle1_deg"] - motion["angle0_deg"]) <= 20.0
        assert 0.9 <= motion["zoom0"] <= 1.1 and 0.9 <= motion["zoom1"] <= 1.1
    still: dict[str, Any] = {"kind": "stacked_affine", "max_shift": 0.0, "max_rotation_deg": 0}
    still |= {"zoom_range": [1.0, 1.0]}
    clip = next(iter(build_source(still, shape=SHAPE, seed=0))).clip
    assert all(np.array_equal(frame, clip[0]) for frame in clip)


def test_stacked_affine_reads_an_image_folder(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"kind": "stacked_affine", "images": str(image_folder)}
    queries = take(build_source(config, shape=SHAPE, seed=0), 12)
    used = {Path(q.recipe["image"]["path"]).name for q in queries}
    assert used == {"stripes.png", "noise.jpg", "grey.PNG"}
    for query in queries:
        assert_well_formed(query)
        assert np.array_equal(recreate_clip(query.recipe, shape=SHAPE), query.clip)
    grey = next(q for q in queries if q.recipe["image"]["path"].endswith("grey.PNG"))
    assert np.array_equal(grey.clip[..., 0], grey.clip[..., 1])  # L mode read as RGB

    # An unreadable image is skipped with a warning; the others still come.
    broken = image_folder.parent / "with_broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"not a png")
    (broken / "good.png").write_bytes((image_folder / "stripes.png").read_bytes())
    config = {"kind": "stacked_affine", "images": str(broken)}
    with caplog.at_level(logging.WARNING, logger="attacker.sources.affine"):
        queries = take(build_source(config, shape=SHAPE, seed=0), 4)
    assert {Path(q.recipe["image"]["path"]).name for q in queries} == {"good.png"}
    assert "bad.png" in caplog.text
    assert caplog.text.count("skipping this image") == 1  # warned once, then skipped quietly
    (broken / "good.png").unlink()
    with pytest.raises(SourceError, match="none of the images is readable"):
        take(build_source(config, shape=SHAPE, seed=0), 1)


def test_stacked_affine_needs_images(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        build_source({"kind": "stacked_affine", "images": str(tmp_path)}, shape=SHAPE, seed=0)
    with pytest.raises(SourceError, match="does not exist"):
        build_source(
            {"kind": "stacked_affine", "images": str(tmp_path / "missing")}, shape=SHAPE, seed=0
        )


# ------------------------------------------------------------------------- video folders


@pytest.mark.parametrize("layout", list(LAYOUT_FILES))
def test_video_folder_layouts_are_discovered(
    tmp_path: Path, mp4s: list[bytes], layout: str
) -> None:
    root = write_videos(tmp_path / layout, LAYOUT_FILES[layout], mp4s)
    (root / "README.txt").write_text("ignored")
    (root / "._hidden.mp4").write_bytes(b"macOS resource fork")
    for asked in ("auto", layout):
        config: dict[str, Any] = {"kind": "video_folder", "root": str(root), "layout": asked}
        config["clips_per_video"] = 2
        queries = list(build_source(config, shape=SHAPE, seed=0))
        per_video = Counter(q.recipe["relpath"] for q in queries)
        assert per_video == dict.fromkeys(LAYOUT_FILES[layout], 2)
        for query in queries:
            assert_well_formed(query)
            recipe = query.recipe
            assert recipe["layout"] == layout
            assert query.true_label is None  # a folder name is not the victim's label
            expected_class = None if layout == "flat" else Path(recipe["relpath"]).parent.name
            assert recipe["class_name"] == expected_class
            assert Path(recipe["path"]).is_absolute()
        assert {q.recipe["clip"] for q in queries} == {0, 1}
    metas = {q.recipe["relpath"]: q.recipe["meta"] for q in queries}
    if layout == "ucf101":
        assert metas["ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c03.avi"] == {"group": 2, "clip": 3}
    if layout == "kinetics":
        assert metas["val/abseiling/_1wThKM-aDg_000000_000010.mp4"] == {
            "youtube_id": "_1wThKM-aDg",
            "start": 0,
            "end": 10,
            "split": "val",
        }


def test_video_folder_clips_are_resized_recreatable_and_shuffled(
    tmp_path: Path, mp4s: list[bytes]
) -> None:
    names = [f"class_{i % 3}/video_{i}.mp4" for i in range(6)]
    root = write_videos(tmp_path / "videos", names, mp4s)
    config: dict[str, Any] = {"kind": "video_folder", "root": str(root), "clips_per_video": 3}
    queries = list(build_source(config, shape=SHAPE, seed=0))
    assert len(queries) == 18
    assert [q.recipe["relpath"] for q in queries] == [
        q.recipe["relpath"] for q in build_source(config, shape=SHAPE, seed=0)
    ]
    for query in queries[:4] + queries[-2:]:
        assert_well_formed(query)
        assert np.array_equal(recreate_clip(query.recipe, shape=SHAPE), query.clip)
    # clips of one video are different parts of it, and the video's motion survives resizing
    first_video = [q.clip for q in queries[:3]]
    assert not np.array_equal(first_video[0], first_video[2])
    assert np.abs(np.diff(first_video[0].astype(int), axis=0)).mean() > 2.0

    in_order = take(build_source(config | {"shuffle": False}, shape=SHAPE, seed=0), 6)
    assert [q.recipe["relpath"] for q in in_order[::3]] == sorted(names)[:2]
    orders = set()
    for seed in range(4):
        source = build_source(config, shape=SHAPE, seed=seed)
        assert isinstance(source, VideoFolderSource)
        orders.add(tuple(source.videos[i].relpath for i in source.order()))
    assert len(orders) > 1  # the seed shuffles the videos


def test_video_folder_skips_unreadable_videos(
    tmp_path: Path, mp4s: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    root = write_videos(tmp_path / "videos", ["a/good.mp4", "b/also_good.avi"], mp4s)
    (root / "a" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 500)
    (root / "b" / "empty.avi").write_bytes(b"")
    config = {"kind": "video_folder", "root": str(root), "clips_per_video": 2}
    with caplog.at_level(logging.WARNING, logger="attacker.sources.videos"):
        queries = list(build_source(config, shape=SHAPE, seed=0))
    assert Counter(q.recipe["relpath"] for q in queries) == {"a/good.mp4": 2, "b/also_good.avi": 2}
    assert "corrupt.mp4" in caplog.text and "empty.avi" in caplog.text


def test_video_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "notes.txt").write_text("no videos here")
    with pytest.raises(SourceError, match="no videos"):
        build_source({"kind": "video_folder", "root": str(tmp_path)}, shape=SHAPE, seed=0)
    with pytest.raises(SourceError, match="not a folder"):
        build_source(
            {"kind": "video_folder", "root": str(tmp_path / "missing")}, shape=SHAPE, seed=0
        )


def test_video_folder_extensions(tmp_path: Path, mp4s: list[bytes]) -> None:
    root = write_videos(tmp_path / "v", ["x/one.MP4", "x/two.avi", "x/three.mov"], mp4s)
    config: dict[str, Any] = {"kind": "video_folder", "root": str(root), "clips_per_video": 1}
    found = {q.recipe["relpath"] for q in build_source(config, shape=SHAPE, seed=0)}
    assert found == {"x/one.MP4", "x/two.avi"}
    config |= {"extensions": [".mov"]}
    found = {q.recipe["relpath"] for q in build_source(config, shape=SHAPE, seed=0)}
    assert found == {"x/three.mov"}


# ------------------------------------------------------------------ synthactions and npz


def test_labelled_synthactions_match_the_data_set() -> None:
    data = SynthActions(seed=11, frames=16, height=32, width=32)
    config: dict[str, Any] = {"kind": "synthactions", "seed": 11, "offset": 100}
    queries = take(build_source(config, shape=SHAPE, seed=999), 20)
    for i, query in enumerate(queries):
        assert query.true_label == data.label(100 + i) == query.recipe["label"]
        assert np.array_equal(query.clip, data.clip(100 + i))
    assert len({q.true_label for q in queries}) > 5
    unlabelled = next(iter(build_source(config | {"labelled": False}, shape=SHAPE, seed=0)))
    assert unlabelled.true_label is None and "label" not in unlabelled.recipe
    assert np.array_equal(unlabelled.clip, queries[0].clip)


def test_synthactions_refuses_a_shape_it_cannot_render() -> None:
    with pytest.raises(SourceError, match="synthactions"):
        build_source({"kind": "synthactions", "seed": 0}, shape=ClipShape(2, 32, 32), seed=0)


@pytest.fixture(scope="module")
def synth_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("npz") / "eval.npz"
    argv = ["--seed", "3", "--n", "12", "--start", "40", "--size", "32", "--out", str(path)]
    assert write_synthactions_npz(argv) == 0
    return path


def test_npz_source_streams_clips_and_labels(synth_npz: Path) -> None:
    data = SynthActions(seed=3, frames=16, height=32, width=32)
    queries = list(build_source({"kind": "npz", "path": str(synth_npz)}, shape=SHAPE, seed=0))
    assert len(queries) == 12
    for i, query in enumerate(queries):
        assert_well_formed(query)
        assert query.true_label == data.label(40 + i)
        assert np.array_equal(query.clip, data.clip(40 + i))
    for query in (queries[7], queries[2], queries[11]):  # out of order: seeks in the stream
        assert np.array_equal(recreate_clip(query.recipe, shape=SHAPE), query.clip)
    no_labels = {"kind": "npz", "path": str(synth_npz), "labels_key": None}
    assert next(iter(build_source(no_labels, shape=SHAPE, seed=0))).true_label is None


def test_npz_source_reads_npy_and_resizes(tmp_path: Path) -> None:
    clips = np.random.default_rng(0).integers(0, 256, (3, 8, 24, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "clips.npy", clips)
    np.savez(tmp_path / "plain.npz", videos=clips)  # uncompressed, another key
    for config in (
        {"kind": "npz", "path": str(tmp_path / "clips.npy")},
        {"kind": "npz", "path": str(tmp_path / "plain.npz"), "clips_key": "videos"},
    ):
        same = list(build_source(config, shape=ClipShape(8, 24, 40), seed=0))
        assert [q.true_label for q in same] == [None] * 3
        assert all(np.array_equal(q.clip, c) for q, c in zip(same, clips, strict=True))
        resized = list(build_source(config, shape=SHAPE, seed=0))
        assert all(q.clip.shape == SHAPE.array_shape for q in resized)
        assert np.array_equal(recreate_clip(resized[1].recipe, shape=SHAPE), resized[1].clip)


def test_npz_errors(tmp_path: Path, synth_npz: Path) -> None:
    with pytest.raises(SourceError, match="no array 'videos'"):
        config = {"kind": "npz", "path": str(synth_npz), "clips_key": "videos"}
        build_source(config, shape=SHAPE, seed=0)
    np.savez(tmp_path / "floats.npz", clips=np.zeros((2, 4, 8, 8, 3), np.float32))
    with pytest.raises(SourceError, match="must be uint8"):
        build_source({"kind": "npz", "path": str(tmp_path / "floats.npz")}, shape=SHAPE, seed=0)
    with pytest.raises(SourceError, match="does not exist"):
        build_source({"kind": "npz", "path": str(tmp_path / "none.npz")}, shape=SHAPE, seed=0)


# ------------------------------------------------------------------------------------ mix


def test_mix_keeps_its_proportions_over_every_prefix() -> None:
    config = {
        "kind": "mix",
        "parts": [
            {"source": {"kind": "synthactions", "seed": 1}, "weight": 0.05},
            {"source": {"kind": "noise"}, "weight": 0.95},
        ],
    }
    queries = take(build_source(config, shape=ClipShape(8, 16, 16), seed=0), 100)
    parts = [q.recipe["part"] for q in queries]
    assert parts.count(0) == 5
    for n in range(1, 101):
        assert math.floor(0.05 * n) <= parts[:n].count(0) <= math.ceil(0.05 * n)
    for query in queries:
        assert query.recipe["source"] == "mix"
        inner = query.recipe["recipe"]["source"]
        assert query.recipe["part_name"] == inner
        assert (query.true_label is not None) == (inner == "synthactions")
    labelled = [q for q in queries if q.recipe["part"] == 0]
    assert [q.recipe["recipe"]["index"] for q in labelled] == [0, 1, 2, 3, 4]


def test_mix_schedule_is_smooth_for_three_parts() -> None:
    order = schedule([1.0, 2.0, 7.0], 1000)
    for n in range(1, 1001):
        counts = Counter(order[:n])
        for part, weight in enumerate([0.1, 0.2, 0.7]):
            assert abs(counts[part] - weight * n) < 1.0
    assert schedule([1.0, 1.0], 4) == [0, 1, 0, 1]


def test_mix_schedule_continues_from_any_counts() -> None:
    """Active selection asks the mix for the parts of each round's clips, round after round."""
    config = {
        "kind": "mix",
        "parts": [
            {"source": {"kind": "noise"}, "weight": 0.05},
            {"source": {"kind": "noise"}, "weight": 0.35},
            {"source": {"kind": "noise"}, "weight": 0.6},
        ],
    }
    mix = build_source(config, shape=SHAPE, seed=0)
    assert isinstance(mix, MixSource)
    full = schedule([0.05, 0.35, 0.6], 300)
    counts = [0, 0, 0]
    for start, end in [(0, 37), (37, 100), (100, 101), (101, 300)]:
        assert mix.next_parts(counts, end - start) == full[start:end]
        for part in full[start:end]:
            counts[part] += 1
    # A part that ran out is skipped; the others take its clips.
    skipped = mix.next_parts([0, 0, 0], 20, [True, False, True])
    assert len(skipped) == 20 and set(skipped) == {0, 2}
    assert mix.next_parts([0, 0, 0], 5, [False, False, False]) == []


def test_mix_part_names_and_seeds() -> None:
    config = {
        "kind": "mix",
        "parts": [
            {"source": {"kind": "noise"}, "weight": 1.0},
            {"source": {"kind": "noise", "temporal": "smooth"}, "weight": 1.0},
            {"source": {"kind": "stacked_affine"}, "weight": 1.0, "name": "images"},
        ],
    }
    queries = take(build_source(config, shape=SHAPE, seed=0), 6)
    assert [q.recipe["part_name"] for q in queries[:3]] == ["noise_0", "noise_1", "images"]
    seeds = {q.recipe["recipe"]["seed"] for q in queries}
    assert len(seeds) == 3  # each part has its own seed
    with pytest.raises(SourceConfigError, match="unique"):
        parse_source_config(
            {"kind": "mix", "parts": [{"source": {"kind": "noise"}, "weight": 1, "name": "a"}] * 2}
        )


def test_mix_with_a_finite_part_stops_or_continues(synth_npz: Path) -> None:
    parts = [
        {"source": {"kind": "npz", "path": str(synth_npz)}, "weight": 0.5},
        {"source": {"kind": "noise"}, "weight": 0.5},
    ]
    stopped = list(build_source({"kind": "mix", "parts": parts}, shape=SHAPE, seed=0))
    assert Counter(q.recipe["part_name"] for q in stopped) == {"npz": 12, "noise": 12}
    go_on = {"kind": "mix", "parts": parts, "on_exhausted": "continue"}
    queries = take(build_source(go_on, shape=SHAPE, seed=0), 40)
    assert Counter(q.recipe["part_name"] for q in queries) == {"npz": 12, "noise": 28}


def test_nested_mix_recreates() -> None:
    inner = {"kind": "mix", "parts": [{"source": {"kind": "noise"}, "weight": 1.0}]}
    config = {
        "kind": "mix",
        "parts": [{"source": inner, "weight": 1.0}, {"source": {"kind": "noise"}, "weight": 1.0}],
    }
    query = next(iter(build_source(config, shape=SHAPE, seed=0)))
    assert query.recipe["recipe"]["source"] == "mix"
    assert np.array_equal(recreate_clip(query.recipe, shape=SHAPE), query.clip)


# ------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("kind", ["noise", "stacked_affine", "synthactions"])
def test_infinite_sources_stream(kind: str) -> None:
    config: dict[str, Any] = {"kind": kind} | ({"seed": 0} if kind == "synthactions" else {})
    big = ClipShape(frames=16, height=64, width=64)  # 196 KiB per clip
    source = build_source(config, shape=big, seed=0)
    tracemalloc.start()
    try:
        iterator = iter(source)
        for _ in range(10):
            next(iterator)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20  # a few clips' worth of temporaries, not a pool


def test_sources_have_no_end() -> None:
    source = build_source({"kind": "noise"}, shape=ClipShape(2, 4, 4), seed=0)
    far = next(itertools.islice(source, 5000, None))
    assert far.recipe["index"] == 5000


# ------------------------------------------------------------------------------- config


def test_config_errors_are_one_line() -> None:
    adapter: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
    with pytest.raises(ValidationError) as unknown_kind:
        adapter.validate_python({"kind": "gan"})
    assert unknown_kind.value.error_count() == 1
    assert unknown_kind.value.errors()[0]["type"] == "union_tag_invalid"
    with pytest.raises(ValidationError) as typo:
        adapter.validate_python({"kind": "noise", "distrbution": "gaussian"})
    assert typo.value.error_count() == 1
    assert typo.value.errors()[0]["type"] == "extra_forbidden"

    cases: dict[str, dict[str, Any]] = {
        "'gan'": {"kind": "gan"},
        "noise.distrbution: Extra inputs are not permitted": {
            "kind": "noise",
            "distrbution": "gaussian",
        },
        "parts.0.source.stacked_affine.zoom_range": {
            "kind": "mix",
            "parts": [{"source": {"kind": "stacked_affine", "zoom_range": [2, 1]}, "weight": 1}],
        },
        "video_folder.root: Field required": {"kind": "video_folder"},
    }
    for expected, data in cases.items():
        with pytest.raises(SourceConfigError) as error:
            parse_source_config(data)
        message = str(error.value)
        assert "\n" not in message and expected in message, message
    with pytest.raises(SourceConfigError, match="Extra inputs"):
        build_source({"kind": "noise", "sd": 3}, shape=SHAPE, seed=0)


def test_configs_round_trip_through_json() -> None:
    config = parse_source_config(GENERATED["mix"])
    assert isinstance(config, MixConfig)
    assert isinstance(config.parts[0].source, NoiseConfig)
    dumped = json.loads(json.dumps(config.model_dump(mode="json")))
    assert parse_source_config(dumped) == config


# ----------------------------------------------------------------------------- speed


def test_generation_speed_is_printed(
    tmp_path: Path, mp4s: list[bytes], synth_npz: Path, image_folder: Path
) -> None:
    """Prints ms per 16x32x32 clip for each source (informative; no timed assertion)."""
    root = write_videos(tmp_path / "v", LAYOUT_FILES["ucf101"], mp4s)
    configs: dict[str, dict[str, Any]] = {
        **{name: GENERATED[name] for name in ("noise_uniform_iid", "noise_uniform_smooth")},
        "stacked_affine (textures)": GENERATED["affine_textures"],
        "stacked_affine (image folder)": {"kind": "stacked_affine", "images": str(image_folder)},
        "synthactions": GENERATED["synthactions"],
        "npz (compressed)": {"kind": "npz", "path": str(synth_npz)},
        "video_folder (40-frame 64x48 mp4s)": {"kind": "video_folder", "root": str(root)},
    }
    lines = []
    for name, config in configs.items():
        source = build_source(config, shape=SHAPE, seed=0)
        next(iter(source))  # warm caches and imports
        start = time.perf_counter()
        count = len(take(source, 30))
        per_clip = (time.perf_counter() - start) / count * 1e3
        lines.append(f"{name:38s} {per_clip:7.2f} ms/clip")
        assert count > 0
    print("\nquery source generation speed at 16x32x32:\n" + "\n".join(lines))
