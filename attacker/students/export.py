"""Exported students: ``student.safetensors`` + ``student.json``, loadable without the attacker.

The safetensors header also carries the config (metadata key ``vidsteal_student``), so the
weights file alone is enough. Loading needs only this package: the registry rebuilds the
architecture from the config and the weights load strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from attacker.students.base import StudentModel
from attacker.students.config import StudentConfig
from attacker.students.factory import create_student, student_config
from attacker.students.preprocess import student_preprocess
from attacker.students.weights import StudentWeightsError, load_strict, read_state_dict

WEIGHTS_FILENAME = "student.safetensors"
CONFIG_FILENAME = "student.json"
METADATA_KEY = "vidsteal_student"


def export_student(model: StudentModel, directory: Path) -> Path:
    """Write ``directory/student.safetensors`` and ``directory/student.json``; return the former.

    The model must have been built by :func:`create_student` (it carries the config).
    """
    config = student_config(model)
    text = config.to_json()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in model.state_dict().items()
    }
    weights = out / WEIGHTS_FILENAME
    save_file(tensors, str(weights), metadata={METADATA_KEY: text, "format": "pt"})
    (out / CONFIG_FILENAME).write_text(
        json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return weights


def read_exported_config(directory_or_file: Path) -> StudentConfig:
    """The StudentConfig of an export (its JSON, or else the safetensors header)."""
    weights, config_file = _export_paths(Path(directory_or_file))
    if config_file.is_file():
        try:
            return StudentConfig.from_json(config_file.read_text(encoding="utf-8"))
        except (KeyError, TypeError, ValueError) as exc:
            raise StudentWeightsError(f"unreadable student config {config_file}: {exc}") from exc
    if not weights.is_file():
        raise StudentWeightsError(f"no exported student at {directory_or_file}")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise StudentWeightsError(f"cannot read {weights} as safetensors: {exc}") from exc
    if raw is None:
        raise StudentWeightsError(
            f"{weights} has no {METADATA_KEY!r} header and no {CONFIG_FILENAME} beside it"
        )
    try:
        return StudentConfig.from_json(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise StudentWeightsError(f"{weights} has an unreadable {METADATA_KEY} header") from exc


def load_exported_student(directory_or_file: Path) -> StudentModel:
    """Rebuild an exported student from its config and load its weights strictly (eval mode).

    ``directory_or_file`` is the export directory, its ``.safetensors`` file, or its ``.json``.
    """
    weights, _ = _export_paths(Path(directory_or_file))
    config = read_exported_config(Path(directory_or_file))
    model = create_student(
        config.architecture,
        num_classes=config.num_classes,
        preprocessing=config.preprocessing,
        labels=config.labels,
        **config.arch_kwargs,
    )
    load_strict(model, read_state_dict(weights), source=str(weights))
    return model.eval()


def predict(
    model: StudentModel, clips_uint8: torch.Tensor | np.ndarray, *, batch_size: int = 64
) -> np.ndarray:
    """Logits (N, num_classes) as float32 numpy for uint8 clips (N, T, H, W, 3).

    Preprocesses with the model's own :class:`StudentPreprocessing` and runs in eval mode under
    ``torch.inference_mode()`` (the model's train/eval mode is restored afterwards).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    prep = student_config(model).preprocessing
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(clips_uint8), batch_size):
                chunk = clips_uint8[start : start + batch_size]
                x = student_preprocess(chunk, prep).to(device)
                outputs.append(model(x).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not outputs:
        return np.zeros((0, model.num_classes), dtype=np.float32)
    return np.concatenate(outputs, axis=0)


def _export_paths(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / WEIGHTS_FILENAME, path / CONFIG_FILENAME
    if path.suffix.lower() == ".json":
        return path.with_suffix(".safetensors"), path
    return path, path.with_suffix(".json")
