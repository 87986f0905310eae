"""Convert TF Model Garden MoViNet checkpoints to this package's MoViNet (safetensors).

Source format: the object-based checkpoint of ``tf.train.Checkpoint(model=MovinetClassifier)``,
the format of the published Kinetics-600 checkpoints (``ckpt-1.index`` / ``.data-*``). Its
variables are named by object path, e.g.::

    model/layer_with_weights-0/layer_with_weights-3/_feature/_conv/_conv/depthwise_kernel/
        .ATTRIBUTES/VARIABLE_VALUE

``model/layer_with_weights-0`` is the backbone, whose layers with weights are numbered in build
order: 0 the stem, 1..L the blocks (stage by stage), L + 1 the head projection;
``model/layer_with_weights-1`` is the classifier head (``_head``, ``_classifier``). Within a
layer the attribute path names the conv block (``_expansion``, ``_feature``, ``_projection``,
``_attention/_se_reduce``, ``_attention/_se_expand``, ``_skip/_projection``,
``_mobile_bottleneck/_rezero``) and the tensor (``_conv`` / ``_conv_temporal`` kernels,
``_batch_norm`` / ``_batch_norm_temporal`` statistics).

Reading: TensorFlow is *not* a dependency. :func:`read_tf_variables` reads an ``.npz`` of
checkpoint-key -> array (what ``bench/movinet_equivalence.py`` exports, or
``np.savez(path, **{k: reader.get_tensor(k) for k in ...})`` anywhere TF is installed), and reads
a TF checkpoint directly only when ``tensorflow`` happens to be importable.

Kernels: TF Conv3D (k_t, k_h, k_w, in, out) -> (out, in, k_t, k_h, k_w); Conv2D (a, b, in, out)
-> (out, in, a, b) then a unit axis where the 3D kernel has one; depthwise (a, b, C, 1) ->
(C, 1, a, b) likewise. Optimizer slots and bookkeeping (``save_counter``, ``optimizer/``,
``global_step``) are skipped; any other variable that has no place is an error that names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from victim_server.models.factory import create_model, model_config
from victim_server.models.movinet import MOVINET_SPECS, MoViNet
from victim_server.models.weights import load_into, save_weights

VARIANTS: tuple[str, ...] = ("a0", "a1", "a2")
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_SKIPPED = re.compile(r"^(_CHECKPOINTABLE_OBJECT_GRAPH|save_counter/|optimizer/|global_step)")
_BACKBONE = re.compile(r"^(?:layer_with_weights-0|_?backbone)/layer_with_weights-(\d+)/(.+)$")
_CLASSIFIER = re.compile(r"^layer_with_weights-1/(.+)$")

# TF attribute path of a conv block's tensor -> our ConvBlock-relative key.
_LEAVES: dict[str, str] = {
    "_batch_norm/gamma": "conv_1.norm.weight",
    "_batch_norm/beta": "conv_1.norm.bias",
    "_batch_norm/moving_mean": "conv_1.norm.running_mean",
    "_batch_norm/moving_variance": "conv_1.norm.running_var",
    "_batch_norm_temporal/gamma": "conv_2.norm.weight",
    "_batch_norm_temporal/beta": "conv_2.norm.bias",
    "_batch_norm_temporal/moving_mean": "conv_2.norm.running_mean",
    "_batch_norm_temporal/moving_variance": "conv_2.norm.running_var",
}
_CONV_LEAF = re.compile(
    r"^(?P<which>_conv|_conv_temporal)/(?:_conv/)?(?P<tensor>kernel|depthwise_kernel|bias)$"
)
# TF conv-block owners inside a MovinetBlock -> our submodule.
_BLOCK_OWNERS: dict[str, str] = {
    "_expansion": "expand",
    "_feature": "deep",
    "_projection": "project",
    "_attention/_se_reduce": "se.fc1",
    "_attention/_se_expand": "se.fc2",
    "_skip/_projection": "res",
}


class ConversionError(ValueError):
    """A checkpoint variable has no place in the model, or a model tensor has no variable."""


def arch_name(variant: str, *, stream: bool) -> str:
    if variant not in VARIANTS:
        raise ConversionError(f"--model must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return f"movinet_{variant}_stream" if stream else f"movinet_{variant}"


def read_tf_variables(src: str | Path) -> dict[str, np.ndarray]:
    """Checkpoint key -> array from an ``.npz`` export, or a TF checkpoint if TF is importable."""
    path = Path(src)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ConversionError(f"no such file: {path}")
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    try:
        import tensorflow as tf  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ConversionError(
            f"{path} is a TF checkpoint and TensorFlow is not installed here: export it to .npz "
            "where TF is (bench/movinet_equivalence.py --export-npz CKPT OUT.npz)"
        ) from None
    prefix = _checkpoint_prefix(path, tf)
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    return {name: np.asarray(reader.get_tensor(name)) for name in names if not _skipped(name)}


def _checkpoint_prefix(path: Path, tf: object) -> str:
    if path.is_dir():
        latest = tf.train.latest_checkpoint(str(path))  # type: ignore[attr-defined]
        if latest is None:
            indexes = sorted(path.glob("*.index"))
            if not indexes:
                raise ConversionError(f"no TF checkpoint (*.index) in {path}")
            latest = str(indexes[-1].with_suffix(""))
        return str(latest)
    if path.suffix == ".index":
        return str(path.with_suffix(""))
    if not Path(f"{path}.index").is_file():
        raise ConversionError(f"no TF checkpoint at {path} (expected {path}.index)")
    return str(path)


def _skipped(name: str) -> bool:
    return bool(_SKIPPED.match(name)) or ".OPTIMIZER_SLOT" in name


def _strip(name: str) -> str:
    key = name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name
    return key[len("model/") :] if key.startswith("model/") else key


def _conv_block_key(owner: str, leaf: str) -> str | None:
    if leaf in _LEAVES:
        return f"{owner}.{_LEAVES[leaf]}"
    match = _CONV_LEAF.match(leaf)
    if match is None:
        return None
    conv = "conv_2" if match["which"] == "_conv_temporal" else "conv_1"
    tensor = "bias" if match["tensor"] == "bias" else "weight"
    return f"{owner}.{conv}.conv3d.{tensor}"


def _block_key(block: str, rest: str, expected: Mapping[str, torch.Tensor]) -> str | None:
    if rest == "_mobile_bottleneck/_rezero/scale":
        return f"{block}.alpha"
    for tf_owner, owner in _BLOCK_OWNERS.items():
        if rest.startswith(tf_owner + "/"):
            if owner == "res":  # res.1 after a pool (strided), res.0 without one
                owner = "res.1" if f"{block}.res.1.conv_1.conv3d.weight" in expected else "res.0"
            return _conv_block_key(f"{block}.{owner}", rest[len(tf_owner) + 1 :])
    return None


def _place(name: str, blocks: list[str], expected: Mapping[str, torch.Tensor]) -> str | None:
    """Our state-dict key for a TF checkpoint variable, or None when it has no place."""
    key = _strip(name)
    backbone = _BACKBONE.match(key)
    if backbone is not None:
        index, rest = int(backbone[1]), backbone[2]
        if index == 0 and rest.startswith("_stem/"):
            return _conv_block_key("conv1", rest[len("_stem/") :])
        if 1 <= index <= len(blocks):
            return _block_key(f"blocks.{blocks[index - 1]}", rest, expected)
        if index == len(blocks) + 1 and rest.startswith("_project/"):
            return _conv_block_key("conv7", rest[len("_project/") :])
        return None
    classifier = _CLASSIFIER.match(key)
    if classifier is not None:
        rest = classifier[1]
        for tf_owner, owner in (("_head/", "classifier.0"), ("_classifier/", "classifier.3")):
            if rest.startswith(tf_owner):
                return _conv_block_key(owner, rest[len(tf_owner) :])
    return None


def _to_torch(name: str, array: np.ndarray, target: torch.Tensor) -> torch.Tensor:
    if array.ndim == 5:  # Conv3D (k_t, k_h, k_w, in, out)
        array = array.transpose(4, 3, 0, 1, 2)
    elif array.ndim == 4:  # Conv2D (a, b, in, out) or depthwise (a, b, C, 1)
        array = array.transpose((2, 3, 0, 1) if "depthwise_kernel" in name else (3, 2, 0, 1))
        # (out, in, a, b) -> (out, in, 1, k_h, k_w) spatial or (out, in, k_t, 1, 1) temporal
        if array.shape[:2] == tuple(target.shape[:2]) and array.size == target.numel():
            array = array.reshape(tuple(target.shape))
    tensor = torch.from_numpy(np.array(array, order="C")).to(target.dtype)  # keeps 0-d shapes
    if tuple(tensor.shape) != tuple(target.shape):
        raise ConversionError(
            f"cannot place TF variable {name!r}: shape {tuple(tensor.shape)} after transposing, "
            f"the model wants {tuple(target.shape)}; is --model the checkpoint's architecture?"
        )
    return tensor


def _block_names(variant: str) -> list[str]:
    spec = MOVINET_SPECS[variant]
    return [f"b{i}_l{j}" for i, stage in enumerate(spec.stages) for j in range(len(stage.layers))]


def _num_classes(variables: Mapping[str, np.ndarray]) -> int:
    for name, array in variables.items():
        if re.match(r"^layer_with_weights-1/_classifier/_conv/(?:_conv/)?kernel$", _strip(name)):
            return int(array.shape[-1])
    raise ConversionError("the checkpoint has no classifier kernel (…/_classifier/_conv/kernel)")


def convert_tf_variables(
    variables: Mapping[str, np.ndarray], *, variant: str, stream: bool
) -> tuple[MoViNet, dict[str, torch.Tensor]]:
    """Our model (empty) and its full state dict from TF checkpoint variables."""
    arch = arch_name(variant, stream=stream)
    model = create_model(arch, num_classes=_num_classes(variables))
    assert isinstance(model, MoViNet)
    expected = model.state_dict()
    blocks = _block_names(variant)
    state: dict[str, torch.Tensor] = {}
    for name in sorted(variables):
        if _skipped(name):
            continue
        key = _place(name, blocks, expected)
        if key is None or key not in expected:
            where = f" (it would be {key!r})" if key else ""
            raise ConversionError(
                f"cannot place TF variable {name!r} in {arch}{where}: is --model "
                f"{variant}{' --stream' if stream else ''} the checkpoint's architecture?"
            )
        if key in state:
            raise ConversionError(f"TF variable {name!r} places {key!r} a second time")
        state[key] = _to_torch(name, np.asarray(variables[name]), expected[key])
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.zeros_like(value))
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ConversionError(
            f"the checkpoint has no variable for {len(missing)} tensor(s) of {arch}, "
            f"e.g. {', '.join(missing[:3])}"
        )
    return model, state


def convert_checkpoint(
    src: str | Path, dst: str | Path, *, variant: str, stream: bool = False
) -> nn.Module:
    """Read ``src`` (TF checkpoint or .npz), write ``dst`` safetensors with the model config."""
    model, state = convert_tf_variables(read_tf_variables(src), variant=variant, stream=stream)
    load_into(model, state, source=str(src))
    save_weights(model, dst, model_config(model))
    return model.eval()
