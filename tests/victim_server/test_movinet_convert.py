"""convert-movinet against the real TF Model Garden checkpoint layout (no TensorFlow needed).

``data/movinet_tf_checkpoint_keys.json`` lists every variable (key and shape) of reference A0 and
A0-stream checkpoints saved by TensorFlow in bench/movinet_equivalence.py. Arrays of those shapes
are converted here; the numerical equivalence with TF is in test_movinet_equivalence.py and
bench/results/movinet_equivalence.json.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from victim_server.cli import app
from victim_server.models import create_model, model_config
from victim_server.models.movinet import MoViNet
from victim_server.models.movinet_convert import (
    ConversionError,
    convert_tf_variables,
    read_tf_variables,
)

LAYOUT = json.loads(
    (Path(__file__).parent / "data" / "movinet_tf_checkpoint_keys.json").read_text()
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _random_checkpoint(case: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    variables = {}
    for key, shape in LAYOUT["checkpoints"][case].items():
        name = key[1:] if key.startswith("/") else LAYOUT["prefix"] + key
        variables[name + LAYOUT["suffix"]] = rng.standard_normal(shape, dtype=np.float32)
    return variables


def _checkpoint(case: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays under the exact keys and shapes of a TF checkpoint of ``case``."""
    return dict(_random_checkpoint(case, seed))


def _key(case: str, fragment: str) -> str:
    matches = [k for k in _checkpoint(case) if fragment in k]
    assert len(matches) == 1, matches
    return matches[0]


@pytest.mark.parametrize(("case", "stream"), [("a0", False), ("a0_stream", True)])
def test_every_reference_variable_has_a_place(case: str, stream: bool) -> None:
    model, state = convert_tf_variables(_checkpoint(case), variant="a0", stream=stream)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    placed = len(LAYOUT["checkpoints"][case]) - 1  # save_counter is bookkeeping
    assert placed == sum(not k.endswith("num_batches_tracked") for k in state)


def test_kernels_are_transposed_into_place() -> None:
    variables = _checkpoint("a0_stream")
    _, state = convert_tf_variables(variables, variant="a0", stream=True)
    block = "layer_with_weights-0/layer_with_weights-5/"  # b2_l0: 5x3x3 depthwise, stride 2
    spatial = variables[_key("a0_stream", block + "_feature/_conv/_conv/depthwise_kernel")]
    temporal = variables[_key("a0_stream", block + "_feature/_conv_temporal/_conv/depthwise")]
    expand = variables[_key("a0_stream", block + "_expansion/_conv/_conv/kernel")]
    ours = "blocks.b2_l0."
    # TF depthwise (k_h, k_w, C, 1) -> (C, 1, 1, k_h, k_w)
    # temporal (k_t, 1, C, 1) -> (C, 1, k_t, 1, 1)
    assert torch.equal(
        state[ours + "deep.conv_1.conv3d.weight"][:, 0, 0],
        torch.from_numpy(spatial[:, :, :, 0]).permute(2, 0, 1),
    )
    assert torch.equal(
        state[ours + "deep.conv_2.conv3d.weight"][:, 0, :, 0, 0],
        torch.from_numpy(temporal[:, 0, :, 0]).T,
    )
    # TF 1x1 conv (1, 1, in, out) -> (out, in, 1, 1, 1)
    assert torch.equal(
        state[ours + "expand.conv_1.conv3d.weight"][:, :, 0, 0, 0], torch.from_numpy(expand[0, 0]).T
    )

    base = _checkpoint("a0")
    _, base_state = convert_tf_variables(base, variant="a0", stream=False)
    kernel = base[_key("a0", block + "_feature/_conv/kernel")]  # Conv3D (k_t, k_h, k_w, 1, C)
    assert torch.equal(
        base_state[ours + "deep.conv_1.conv3d.weight"],
        torch.from_numpy(kernel).permute(4, 3, 0, 1, 2),
    )
    scale = base[_key("a0", block + "_mobile_bottleneck/_rezero/scale")]
    assert float(base_state[ours + "alpha"]) == float(scale)


def test_unplaceable_variable_is_named_in_one_line() -> None:
    variables = _checkpoint("a0")
    stray = "model/layer_with_weights-0/layer_with_weights-3/_pos_encoding/_rezero/scale"
    variables[stray + LAYOUT["suffix"]] = np.zeros((), np.float32)
    with pytest.raises(ConversionError, match="_pos_encoding") as caught:
        convert_tf_variables(variables, variant="a0", stream=False)
    assert "\n" not in str(caught.value)


def test_wrong_architecture_fails_loudly() -> None:
    with pytest.raises(ConversionError, match=r"cannot place TF variable .*--model"):
        convert_tf_variables(_checkpoint("a0_stream"), variant="a0", stream=False)
    with pytest.raises(ConversionError, match=r"cannot place .*shape"):
        convert_tf_variables(_checkpoint("a0"), variant="a1", stream=False)
    with pytest.raises(ConversionError, match="no variable for"):
        partial = {k: v for k, v in _checkpoint("a0").items() if "layer_with_weights-7/" not in k}
        convert_tf_variables(partial, variant="a0", stream=False)
    with pytest.raises(ConversionError, match="a0, a1, a2"):
        convert_tf_variables(_checkpoint("a0"), variant="a3", stream=False)


def test_cli_converts_an_npz_export_for_serving(tmp_path: Path) -> None:
    variables = _checkpoint("a0_stream", seed=1)
    src = tmp_path / "a0_stream.npz"
    np.savez(src, **variables)
    assert set(read_tf_variables(src)) == set(variables)
    dst = tmp_path / "movinet_a0_stream.safetensors"
    result = CliRunner().invoke(
        app, ["convert-movinet", str(src), str(dst), "--model", "a0", "--stream"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["classes"] == 600
    model = create_model("movinet_a0_stream", weights=dst)
    assert isinstance(model, MoViNet) and model.causal
    assert model_config(model).num_classes == 600

    bad = CliRunner().invoke(app, ["convert-movinet", str(src), str(dst), "--model", "a0"])
    assert bad.exit_code == 2
    assert "cannot place TF variable" in bad.output


def test_tf_checkpoint_without_tensorflow_says_how_to_export(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorFlow is installed here")
    with pytest.raises(ConversionError, match="--export-npz"):
        read_tf_variables(tmp_path / "ckpt-1")
