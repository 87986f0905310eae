"""The student zoo: every registered student builds at its tiny size, trains, splits into
backbone + head, exports and reloads; backbone weights load strictly; preprocessing resamples
and normalises; tiny students learn a motion-only task."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from attacker.students import (
    StudentConfig,
    StudentModel,
    StudentPreprocessing,
    StudentWeightsError,
    create_student,
    export_student,
    get_student_entry,
    list_students,
    load_exported_student,
    predict,
    student_config,
    student_preprocess,
)

ALL_STUDENTS = list_students()
TORCHVISION_STUDENTS = ["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "swin3d_t", "mvit_v2_s"]
TINY_STUDENTS = ["tiny3d", "tiny_r2plus1d", "tiny_frame"]
PYTORCHVIDEO_STUDENTS = ["x3d_xs", "slowfast_r18"]
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "attacker" / "students"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tiny(name: str, num_classes: int = 5) -> tuple[StudentModel, torch.Tensor]:
    """A student at its registered tiny size, and a random input batch for it."""
    entry = get_student_entry(name)
    model = create_student(
        name, num_classes=num_classes, preprocessing=entry.tiny_preprocessing(), **entry.tiny_kwargs
    )
    return model, torch.randn(2, 3, *entry.tiny_size)


def _uint8_clips(n: int, t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, t, h, w, 3), dtype=np.uint8)


# --- registry -----------------------------------------------------------------------------------


def test_registry_lists_every_required_student_by_family() -> None:
    assert set(list_students("torchvision")) == set(TORCHVISION_STUDENTS)
    assert set(list_students("tiny")) == set(TINY_STUDENTS)
    assert set(list_students("pytorchvideo")) == set(PYTORCHVIDEO_STUDENTS)
    assert {"frame_vit_tiny", "frame_resnet50", "frame_timm"} <= set(list_students("frame"))
    assert list_students() == sorted(list_students())
    assert list_students("no-such-family") == []
    entry = get_student_entry("mvit_v2_s")
    assert entry.default_size == (16, 224, 224)
    assert entry.default_preprocessing().size == (16, 224, 224)


def test_unknown_student_name_lists_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="tiny3d"):
        create_student("tiny3e", num_classes=3)
    with pytest.raises(KeyError, match="unknown student"):
        get_student_entry("resnet-1000")


def test_misspelt_arch_kwargs_fail_loudly() -> None:
    with pytest.raises(TypeError):
        create_student("tiny3d", num_classes=3, widht=[8, 8, 8, 8])
    with pytest.raises(TypeError):
        create_student("r3d_18", num_classes=3, layer=[1, 1, 1, 1])
    with pytest.raises(TypeError):
        create_student("frame_vit_tiny", num_classes=3, dept=2, patch_size=8)
    with pytest.raises(TypeError, match="backbone"):
        create_student("frame_timm", num_classes=3)  # the timm name is required


def test_builders_refuse_downloads_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backbone_weights"):
        create_student("frame_timm", num_classes=3, backbone="resnet10t", pretrained=True)
    with pytest.raises(ValueError, match="temporal"):
        create_student("frame_timm", num_classes=3, backbone="resnet10t", temporal="lstm")
    with pytest.raises(ValueError, match="labels"):
        create_student("tiny3d", num_classes=3, labels=["a", "b"])
    with pytest.raises(ValueError, match="num_classes"):
        create_student("tiny3d", num_classes=0)


def test_fixed_size_students_take_their_size_from_preprocessing() -> None:
    prep = StudentPreprocessing(4, 64, 32)
    model = create_student(
        "mvit_v2_s", num_classes=3, preprocessing=prep, embed_dim=8, depths=[1, 1, 1, 1]
    )
    assert student_config(model).arch_kwargs["spatial_size"] == [64, 32]
    assert model(torch.randn(1, 3, 4, 64, 32)).shape == (1, 3)
    with pytest.raises(ValueError, match="contradicts"):
        create_student("mvit_v2_s", num_classes=3, preprocessing=prep, temporal_size=8)
    with pytest.raises(ValueError, match="multiples of 32"):
        create_student("mvit_v2_s", num_classes=3, preprocessing=StudentPreprocessing(4, 48, 48))
    vit = create_student(
        "frame_vit_tiny",
        num_classes=3,
        preprocessing=StudentPreprocessing(2, 48, 48),
        patch_size=16,
        depth=1,
    )
    assert vit(torch.randn(1, 3, 2, 48, 48)).shape == (1, 3)


@pytest.mark.parametrize("name", TORCHVISION_STUDENTS)
def test_torchvision_students_have_torchvisions_backbone_layout(name: str) -> None:
    """A full upstream checkpoint (local file) must fit the backbone once its classifier is
    dropped; built on the meta device, so no memory or time is spent."""
    from torchvision.models import video

    with torch.device("meta"):
        reference = getattr(video, name)().state_dict()
        student = create_student(name, num_classes=400)
    kept = {k: v.shape for k, v in reference.items() if not k.startswith(student.checkpoint_ignore)}
    assert len(kept) < len(reference)  # the classifier was there and is dropped
    assert kept == {k: v.shape for k, v in student.backbone.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "mean", "std"),
    [
        ("x3d_xs", (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
        ("slowfast_r18", (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
        ("r3d_18", (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
        ("tiny3d", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    ],
)
def test_mean_and_std_come_from_the_students_own_entry(
    name: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    entry = get_student_entry(name)
    assert (entry.mean, entry.std) == (mean, std)
    for prep in (entry.default_preprocessing(), entry.tiny_preprocessing()):
        assert (prep.mean, prep.std) == (mean, std)
    model = create_student(name, num_classes=3, **entry.tiny_kwargs)  # no preprocessing given
    config = student_config(model)
    assert config.preprocessing == entry.default_preprocessing()
    assert (config.preprocessing.mean, config.preprocessing.std) == (mean, std)


@pytest.mark.parametrize("name", PYTORCHVIDEO_STUDENTS)
def test_pytorchvideo_students_take_the_ranges_clip_sizes(name: str) -> None:
    """The embedded victim's 16x32x32 and the tests' 8x16x16: pools are adaptive, so a student
    built for one size runs at any other; pytorchvideo.transforms is never imported."""
    torch.manual_seed(3)
    entry = get_student_entry(name)
    model = create_student(
        name,
        num_classes=4,
        preprocessing=StudentPreprocessing(16, 32, 32, mean=entry.mean, std=entry.std),
        **entry.tiny_kwargs,
    )
    for size in ((16, 32, 32), (8, 16, 16), (4, 40, 24)):
        logits = model(torch.randn(2, 3, *size))
        assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert not [m for m in sys.modules if m.startswith("pytorchvideo.transforms")]


def test_x3d_xs_has_pytorchvideos_backbone_layout() -> None:
    """An upstream X3D-XS checkpoint (local file) fits the backbone once its classifier is
    dropped: same keys and shapes as ``create_x3d`` with the XS settings."""
    from pytorchvideo.models.x3d import create_x3d

    with torch.device("meta"):
        reference = create_x3d(input_clip_length=4, input_crop_size=160).state_dict()
        student = create_student("x3d_xs", num_classes=400)
    kept = {k: v.shape for k, v in reference.items() if not k.startswith(student.checkpoint_ignore)}
    assert len(kept) == len(reference) - 2  # the classifier's weight and bias
    assert kept == {k: v.shape for k, v in student.backbone.state_dict().items()}
    assert student.num_features == 2048


def test_mvit_v2_s_real_config_trains_at_a_small_fixed_size() -> None:
    """The full 34.5M-parameter MViTv2-S, built for 4x32x32 clips instead of 16x224x224."""
    torch.manual_seed(6)
    model = create_student(
        "mvit_v2_s",
        num_classes=4,
        preprocessing=StudentPreprocessing(4, 32, 32),
        stochastic_depth_prob=0.0,  # so no residual branch is dropped and every weight gets a grad
    )
    assert sum(p.numel() for p in model.backbone_parameters()) > 34_000_000
    logits = model(torch.randn(1, 3, 4, 32, 32))
    assert logits.shape == (1, 4)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.backbone_parameters())


# --- every student, generated from the registry -------------------------------------------------


@pytest.mark.parametrize("name", ALL_STUDENTS)
def test_student_trains_and_splits_into_backbone_and_head(name: str) -> None:
    torch.manual_seed(0)
    model, x = _tiny(name)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()

    head = list(model.head_parameters())
    backbone = list(model.backbone_parameters())
    assert head and backbone
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone)
    head_ids, backbone_ids = {id(p) for p in head}, {id(p) for p in backbone}
    assert not head_ids & backbone_ids
    assert head_ids | backbone_ids == {id(p) for p in model.parameters()}
    assert len(head) + len(backbone) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ALL_STUDENTS)
def test_features_head_compose_and_reset_classifier(name: str) -> None:
    torch.manual_seed(1)
    model, x = _tiny(name)
    model.eval()
    with torch.inference_mode():
        features = model.forward_features(x)
        assert features.shape == (2, model.num_features)
        logits = model(x)
        assert torch.allclose(model.forward_head(features), logits, atol=1e-5)

    config = student_config(model)
    assert config.architecture == name and config.num_classes == 5
    assert config.preprocessing == get_student_entry(name).tiny_preprocessing()
    assert StudentConfig.from_dict(json.loads(config.to_json())) == config

    model.reset_classifier(7)
    with torch.inference_mode():
        assert model(x).shape == (2, 7)
        assert torch.allclose(model.forward_features(x), features)  # backbone untouched
    assert student_config(model).num_classes == 7
    assert len(student_config(model).labels) == 7


# --- export / load ------------------------------------------------------------------------------


def _train_steps(model: StudentModel, x: torch.Tensor, steps: int = 2) -> None:
    """Change weights and BatchNorm statistics away from their initial values."""
    optimiser = torch.optim.AdamW(
        [
            {"params": list(model.backbone_parameters()), "lr": 1e-3},
            {"params": list(model.head_parameters()), "lr": 1e-2},
        ]
    )
    model.train()
    for _ in range(steps):
        loss = model(x).logsumexp(dim=1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("tiny3d", {}),
        ("frame_vit_tiny", {"patch_size": 8, "depth": 1, "temporal": "conv"}),
        ("mvit_v2_s", {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}),
    ],
)
def test_export_and_reload_give_identical_predictions(
    name: str, kwargs: dict[str, Any], tmp_path: Path
) -> None:
    torch.manual_seed(2)
    prep = StudentPreprocessing(4, 32, 32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    labels = ["left", "right", "up"]
    model = create_student(name, num_classes=3, preprocessing=prep, labels=labels, **kwargs)
    _train_steps(model, torch.randn(4, 3, 4, 32, 32))

    weights = export_student(model, tmp_path / "export")
    assert weights == tmp_path / "export" / "student.safetensors"
    saved = json.loads((tmp_path / "export" / "student.json").read_text())
    assert saved["architecture"] == name
    assert saved["labels"] == labels
    assert saved["preprocessing"]["mean"] == [0.4, 0.5, 0.6]
    with safe_open(str(weights), framework="pt") as handle:
        assert json.loads((handle.metadata() or {})["vidsteal_student"]) == saved

    clips = _uint8_clips(3, 7, 40, 36)
    expected = predict(model, clips)
    assert model.training  # predict restores the mode it found
    reloaded = load_exported_student(tmp_path / "export")
    assert not reloaded.training
    assert student_config(reloaded) == student_config(model)
    got = predict(reloaded, clips)
    assert got.dtype == np.float32 and got.shape == (3, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)

    # The weights file alone is enough: the config also sits in its header.
    (tmp_path / "export" / "student.json").unlink()
    np.testing.assert_allclose(predict(load_exported_student(weights), clips), expected, atol=1e-5)


def test_export_refuses_models_without_config_and_loading_is_strict(tmp_path: Path) -> None:
    bare = StudentModel(nn.Identity(), num_features=4, num_classes=2)
    with pytest.raises(TypeError, match="create_student"):
        export_student(bare, tmp_path / "bare")

    model = create_student("tiny3d", num_classes=3, widths=[8, 8, 16, 16])
    weights = export_student(model, tmp_path / "ok")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    save_file(state, str(weights), metadata={"vidsteal_student": student_config(model).to_json()})
    with pytest.raises(StudentWeightsError, match="missing key"):
        load_exported_student(tmp_path / "ok")
    with pytest.raises(StudentWeightsError, match="no exported student"):
        load_exported_student(tmp_path / "nothing-here")


# --- backbone weights ---------------------------------------------------------------------------


def test_backbone_weights_load_into_the_backbone_only(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = create_student("tiny3d", num_classes=4, widths=[8, 8, 16, 16])
    _train_steps(source, torch.randn(4, 3, 8, 32, 32))
    backbone_file = tmp_path / "backbone.safetensors"
    save_file(
        {k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(backbone_file)
    )
    torch_file = tmp_path / "backbone.pth"
    torch.save({"state_dict": source.backbone.state_dict(), "epoch": 3}, torch_file)
    exported = export_student(source, tmp_path / "exported")

    for path in (backbone_file, torch_file, exported):
        student = create_student(
            "tiny3d", num_classes=9, widths=[8, 8, 16, 16], backbone_weights=path
        )
        for key, value in source.backbone.state_dict().items():
            assert torch.equal(student.backbone.state_dict()[key], value), (path, key)
        assert student.head.out_features == 9


def test_backbone_weights_mismatch_is_reported_key_by_key(tmp_path: Path) -> None:
    source = create_student("tiny3d", num_classes=4, widths=[8, 8, 16, 16])
    path = tmp_path / "narrow.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))
    with pytest.raises(StudentWeightsError, match=r"shape mismatch.*features\.0\.weight"):
        create_student("tiny3d", num_classes=4, backbone_weights=path)
    with pytest.raises(StudentWeightsError, match="missing key"):
        create_student("tiny_r2plus1d", num_classes=4, widths=[8, 8, 16, 16], backbone_weights=path)
    with pytest.raises(StudentWeightsError, match="not found"):
        create_student("tiny3d", num_classes=4, backbone_weights=tmp_path / "absent.pt")
    pickled = tmp_path / "evil.pth"
    torch.save({"state_dict": source.backbone.state_dict(), "payload": object()}, pickled)
    with pytest.raises(StudentWeightsError, match="weights-only"):
        create_student("tiny3d", num_classes=4, widths=[8, 8, 16, 16], backbone_weights=pickled)


def test_upstream_checkpoints_load_as_backbones(tmp_path: Path) -> None:
    """A torchvision video checkpoint (with its fc) and a 2D timm image checkpoint (with its
    classifier, and no temporal layers) both load as backbone weights."""
    import timm
    from torchvision.models.video.resnet import BasicBlock, BasicStem, Conv3DSimple, VideoResNet

    torch.manual_seed(4)
    # torchvision's r3d_18 with one block per stage, as a K400 checkpoint file would hold it.
    upstream = VideoResNet(
        BasicBlock, [Conv3DSimple] * 4, [1, 1, 1, 1], BasicStem, num_classes=11
    ).state_dict()
    path = tmp_path / "r3d_18_k400.pth"
    torch.save(upstream, path)
    student = create_student("r3d_18", num_classes=3, layers=[1, 1, 1, 1], backbone_weights=path)
    assert torch.equal(student.backbone.state_dict()["stem.0.weight"], upstream["stem.0.weight"])

    image = timm.create_model("resnet10t", pretrained=False, num_classes=10).state_dict()
    image_file = tmp_path / "resnet10t_in1k.safetensors"
    save_file({k: v.contiguous() for k, v in image.items()}, str(image_file))
    frame = create_student(
        "frame_timm",
        num_classes=3,
        backbone="resnet10t",
        temporal="conv",
        backbone_weights=image_file,
    )
    encoder = frame.backbone.state_dict()
    assert torch.equal(encoder["encoder.conv1.0.weight"], image["conv1.0.weight"])
    assert not any(key.startswith("encoder.fc") for key in encoder)


# --- preprocessing ------------------------------------------------------------------------------


def test_preprocess_takes_the_middle_frame_of_equal_segments() -> None:
    clips = np.zeros((2, 16, 8, 8, 3), dtype=np.uint8)
    clips[:, :, :, :, :] = np.arange(16, dtype=np.uint8)[None, :, None, None, None] * 10
    prep = StudentPreprocessing(4, 8, 8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = student_preprocess(clips, prep)
    assert out.shape == (2, 3, 4, 8, 8) and out.dtype == torch.float32
    picked = torch.round(out[0, 0, :, 0, 0] * 255 / 10).long().tolist()
    assert picked == [2, 6, 10, 14]
    # Fewer frames than asked: frames repeat in order.
    up = student_preprocess(clips[:, :2], StudentPreprocessing(4, 8, 8, (0, 0, 0), (1, 1, 1)))
    assert torch.round(up[0, 0, :, 0, 0] * 255 / 10).long().tolist() == [0, 0, 1, 1]


def test_preprocess_resizes_and_normalises() -> None:
    clips = torch.full((3, 5, 40, 24, 3), 191, dtype=torch.uint8)
    clips[..., 1] = 64
    prep = StudentPreprocessing(5, 16, 12, mean=(0.5, 0.25, 0.0), std=(0.25, 0.5, 2.0))
    out = student_preprocess(clips, prep)
    assert out.shape == (3, 3, 5, 16, 12)
    expected = [(191 / 255 - 0.5) / 0.25, (64 / 255 - 0.25) / 0.5, (191 / 255) / 2.0]
    for channel, value in enumerate(expected):
        assert torch.allclose(out[:, channel], torch.tensor(value), atol=1e-5)
    # Antialiased downsizing of a fine checkerboard averages it instead of aliasing.
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    checker = np.repeat(board[None, None, :, :, None], 3, axis=4)
    small = student_preprocess(checker, StudentPreprocessing(1, 8, 8, (0, 0, 0), (1, 1, 1)))
    assert torch.allclose(small, torch.tensor(0.5), atol=0.05)
    assert student_preprocess(clips[:0], prep).shape == (0, 3, 5, 16, 12)


def test_preprocess_rejects_wrong_input() -> None:
    prep = StudentPreprocessing(4, 8, 8)
    with pytest.raises(TypeError, match="uint8"):
        student_preprocess(np.zeros((1, 4, 8, 8, 3), dtype=np.float32), prep)
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\)"):
        student_preprocess(np.zeros((4, 8, 8, 3), dtype=np.uint8), prep)
    with pytest.raises(ValueError, match="std"):
        StudentPreprocessing(4, 8, 8, std=(1.0, 0.0, 1.0))
    restored = StudentPreprocessing.from_dict(prep.to_dict())
    assert restored == prep


# --- the tiny students learn motion ------------------------------------------------------------


def _moving_square_clips(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label 0: a square moving right, 1: moving left. Every single frame, and the bag of frames
    of a clip, has the same distribution in both classes: only the order tells them apart."""
    rng = np.random.default_rng(seed)
    frames, size, side = 8, 16, 3
    clips = np.zeros((n, frames, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=n)
    for i, label in enumerate(labels):
        step = 1 if label == 0 else -1
        x0 = rng.integers(0, 7) if step == 1 else rng.integers(7, 14)
        y0 = rng.integers(0, size - side + 1)
        for t in range(frames):
            x = x0 + step * t
            clips[i, t, y0 : y0 + side, x : x + side] = 255
    prep = StudentPreprocessing(frames, size, size)
    return student_preprocess(clips, prep), torch.from_numpy(labels)


def test_tiny3d_blocks_deepen_a_stage_and_only_its_first_convolution_strides() -> None:
    shallow = create_student("tiny3d", num_classes=5, widths=[4, 8, 8, 16])
    deep = create_student("tiny3d", num_classes=5, widths=[4, 8, 8, 16], blocks=[1, 3, 3, 1])

    def convs(model: nn.Module) -> list[nn.Conv3d]:
        return [m for m in model.modules() if isinstance(m, nn.Conv3d)]

    assert len(convs(shallow)) == 4 and len(convs(deep)) == 8
    strides = [conv.stride for conv in convs(deep)]
    one = (1, 1, 1)
    assert strides == [(1, 2, 2), (2, 2, 2), one, one, (2, 2, 2), one, one, one]
    x = torch.randn(2, 3, 16, 32, 32)
    assert deep(x).shape == (2, 5)
    # The same output resolution as the shallow net: depth is added, not downsampling.
    assert deep.backbone.features(deep.backbone.differences(x)).shape[2:] == (4, 4, 4)
    assert student_config(deep).arch_kwargs["blocks"] == [1, 3, 3, 1]


@pytest.mark.parametrize("name", TINY_STUDENTS)
def test_tiny_students_learn_a_motion_only_task(name: str) -> None:
    torch.manual_seed(5)
    x, y = _moving_square_clips(64, seed=0)
    x_test, y_test = _moving_square_clips(64, seed=1)
    model = create_student(name, num_classes=2, widths=[8, 16, 16, 32])
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        batch = slice((step % 4) * 16, (step % 4 + 1) * 16)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.inference_mode():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    assert accuracy >= 0.85, f"{name} reached only {accuracy:.2f} on held-out clips"


# --- package boundary ---------------------------------------------------------------------------


def test_students_package_never_imports_the_victim_or_training_code() -> None:
    for source in sorted(PACKAGE_DIR.glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert not module.startswith("victim_server"), (source.name, module)
                assert not module.startswith(("attacker.train", "attacker.client")), (
                    source.name,
                    module,
                )
