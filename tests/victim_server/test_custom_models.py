"""Bring-your-own models: TorchScript and torch.export programs with labels and an input spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from victim_server.models import WeightsError, create_model, model_config


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3, 4)))


def _labels(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(f"action_{i}" for i in range(n)) + "\n")
    return path


def test_torchscript_model_serves_with_labels_and_spec(tmp_path: Path) -> None:
    source = _Tiny().eval()
    path = tmp_path / "model.pt"
    torch.jit.script(source).save(str(path))
    model = create_model(
        "torchscript", weights=path, labels=_labels(tmp_path), input_spec="8x16x16"
    )
    config = model_config(model)
    assert config.labels[3] == "action_3" and config.input.frames == 8
    x = torch.randn(2, 3, 8, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(model(x), source(x))


def test_exported_program_with_json_spec(tmp_path: Path) -> None:
    source = _Tiny().eval()
    x = torch.randn(1, 3, 4, 8, 8)
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(source, (x,)), str(path))
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"frames": 4, "height": 8, "width": 8, "mean": [0, 0, 0], "std": [1, 1, 1]})
    )
    model = create_model("export", weights=path, input_spec=spec)
    assert model_config(model).num_classes == 4
    with torch.inference_mode():
        assert torch.allclose(model(x), source(x))


def test_label_count_must_match_outputs(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.jit.script(_Tiny()).save(str(path))
    with pytest.raises(WeightsError, match=r"3 labels given but .* outputs 4 classes"):
        create_model("torchscript", weights=path, labels=_labels(tmp_path, 3), input_spec="4x8x8")


def test_custom_model_needs_file_and_spec(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="pass weights=PATH"):
        create_model("torchscript")
    path = tmp_path / "model.pt"
    torch.jit.script(_Tiny()).save(str(path))
    with pytest.raises(WeightsError, match="need an input spec"):
        create_model("torchscript", weights=path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a program")
    with pytest.raises(WeightsError, match="cannot load"):
        create_model("torchscript", weights=garbage, input_spec="4x8x8")
