"""Every registered model builds, runs forward and backward at a tiny size, and round-trips
its weights; mismatched checkpoints fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from victim_server.models import (
    InputSpec,
    WeightsError,
    create_model,
    get_model_entry,
    list_models,
    model_config,
    save_weights,
)

BUILDABLE = list_models(buildable=True)


def _tiny(name: str, num_classes: int = 5) -> tuple[torch.nn.Module, InputSpec]:
    entry = get_model_entry(name)
    spec = entry.test_input or entry.default_input
    model = create_model(name, num_classes=num_classes, input_spec=spec, **entry.test_kwargs)
    return model, spec


def test_registry_lists_the_required_families() -> None:
    names = set(list_models())
    assert {
        "swin3d_t",
        "swin3d_micro",
        "movinet_a0",
        "movinet_a1",
        "movinet_a2",
        "movinet_micro",
        "torchscript",
        "export",
    } <= names


@pytest.mark.parametrize("name", BUILDABLE)
def test_forward_and_backward_at_tiny_size(name: str) -> None:
    torch.manual_seed(0)
    model, spec = _tiny(name)
    model.train()
    x = torch.randn(2, 3, spec.frames, spec.height, spec.width)
    logits = model(x)
    assert logits.shape == (2, 5)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[:3])
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    features = model.forward_features(x)  # type: ignore[operator]
    assert features.shape == (2, model.num_features)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", BUILDABLE)
def test_safetensors_round_trip_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model, spec = _tiny(name)
    path = save_weights(model, tmp_path / f"{name}.safetensors", model_config(model))
    reloaded = create_model(name, weights=path)
    assert model_config(reloaded) == model_config(model)
    x = torch.randn(1, 3, spec.frames, spec.height, spec.width)
    with torch.inference_mode():
        assert torch.allclose(model.eval()(x), reloaded(x), atol=1e-6)


def test_weights_only_torch_checkpoint_loads(tmp_path: Path) -> None:
    model, spec = _tiny("swin3d_micro")
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    reloaded = create_model("swin3d_micro", num_classes=5, weights=path, embed_dim=8)
    x = torch.randn(1, 3, spec.frames, spec.height, spec.width)
    with torch.inference_mode():
        assert torch.allclose(model(x), reloaded(x), atol=1e-6)


def test_pickled_objects_in_a_checkpoint_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": object()}, path)
    with pytest.raises(WeightsError, match="weights-only"):
        create_model("swin3d_micro", weights=path)


def test_class_count_mismatch_names_the_head(tmp_path: Path) -> None:
    model, _ = _tiny("swin3d_micro", num_classes=5)
    path = tmp_path / "five.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(WeightsError, match=r"checkpoint has 5 classes, the model was built for 7"):
        create_model("swin3d_micro", num_classes=7, weights=path, embed_dim=8)


def test_stored_config_conflicts_fail_loudly(tmp_path: Path) -> None:
    model, _ = _tiny("swin3d_micro", num_classes=5)
    path = save_weights(model, tmp_path / "m.safetensors", model_config(model))
    with pytest.raises(WeightsError, match="checkpoint has 5 classes"):
        create_model("swin3d_micro", num_classes=6, weights=path)
    with pytest.raises(WeightsError, match="saved for 'swin3d_micro'"):
        create_model("movinet_micro", weights=path)


def test_missing_keys_are_reported(tmp_path: Path) -> None:
    model, _ = _tiny("swin3d_micro")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("norm.")}
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"missing key\(s\), e\.g\. norm\."):
        create_model("swin3d_micro", num_classes=5, weights=path, embed_dim=8)


def test_swin3d_t_knows_kinetics_labels_and_input() -> None:
    entry = get_model_entry("swin3d_t")
    assert entry.default_input.frames == 32 and entry.default_input.height == 224
    assert entry.default_labels is not None
    labels = entry.default_labels(400)
    assert labels is not None and len(labels) == 400 and "abseiling" in labels


def test_swin3d_t_loads_a_torchvision_layout_checkpoint(tmp_path: Path) -> None:
    """The real checkpoint is torchvision's state dict; a fake one with its keys must load."""
    from torchvision.models.video import swin3d_t

    reference = swin3d_t(weights=None, num_classes=400)
    path = tmp_path / "swin3d_t-7615ae03.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("swin3d_t", weights=path)
    config = model_config(model)
    assert config.num_classes == 400 and config.labels[0] == "abseiling"
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(reference.eval()(x), model(x), atol=1e-5)


def test_unknown_model_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(WeightsError, match="weights file not found"):
        create_model("swin3d_micro", weights=tmp_path / "absent.safetensors")
    with pytest.raises(WeightsError, match="unsupported weights format"):
        bad = tmp_path / "w.onnx"
        bad.write_bytes(b"x")
        create_model("swin3d_micro", weights=bad)
