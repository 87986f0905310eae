"""MoViNet: shapes, gradients, the feature/head split, the checkpoint key layout, weights I/O."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from victim_server.models import (
    VideoClassifier,
    WeightsError,
    create_model,
    get_model_entry,
    list_models,
    model_config,
    save_weights,
)
from victim_server.models.config import UNIT_MEAN, UNIT_STD, InputSpec
from victim_server.models.movinet import (
    MOVINET_SPECS,
    ConvBlock,
    MoViNet,
    MoViNetSpec,
    PaddingMode,
    SkipPool,
)

MOVINETS = [
    "movinet_a0",
    "movinet_a0_stream",
    "movinet_a1",
    "movinet_a1_stream",
    "movinet_a2",
    "movinet_a2_stream",
    "movinet_micro",
]
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # These tensors are tiny: a second intra-op thread only adds barrier waits, which become
    # very slow when the cores are shared with other work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clip(spec: InputSpec, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, spec.frames, spec.height, spec.width)


def _test_input(name: str) -> InputSpec:
    entry = get_model_entry(name)
    assert entry.test_input is not None
    return entry.test_input


def _build(name: str, **kwargs: Any) -> MoViNet:
    entry = get_model_entry(name)
    model = create_model(name, **{**entry.test_kwargs, **kwargs})
    assert isinstance(model, MoViNet)
    return model


def _set_alphas(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".alpha"):
                param.fill_(value)


def test_registry_lists_the_family() -> None:
    assert list_models(family="movinet") == MOVINETS
    a0, a2 = get_model_entry("movinet_a0"), get_model_entry("movinet_a2")
    assert (a0.default_input.height, a0.default_input.width, a0.default_input.frames) == (
        172,
        172,
        50,
    )
    assert (a2.default_input.height, a2.default_input.width) == (224, 224)
    assert a0.default_input.mean == UNIT_MEAN and a0.default_input.std == UNIT_STD
    assert a0.default_num_classes == 600
    micro = get_model_entry("movinet_micro")
    assert micro.default_num_classes == 16
    assert micro.default_input == InputSpec(
        frames=16, height=32, width=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    )


@pytest.mark.parametrize("name", MOVINETS)
def test_forward_shape(name: str) -> None:
    model = _build(name)
    assert isinstance(model, VideoClassifier)
    with torch.inference_mode():
        logits = model(_clip(_test_input(name)))
    entry = get_model_entry(name)
    assert logits.shape == (2, entry.default_num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MOVINETS)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = _build(name).train()
    _set_alphas(model, 1.0)  # the reference initialises the residual scale at 0 (ReZero)
    logits = model(_clip(_test_input(name)))
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_blocks_start_as_their_skip_path() -> None:
    model = _build("movinet_micro")
    alphas = [p for n, p in model.named_parameters() if n.endswith(".alpha")]
    assert len(alphas) == sum(len(s.layers) for s in MOVINET_SPECS["micro"].stages)
    assert all(float(a.detach()) == 0.0 for a in alphas)
    block = model.blocks.get_submodule("b1_l1")  # identity skip: the block is the identity at init
    x = torch.randn(1, 16, 2, 4, 4)
    with torch.inference_mode():
        assert torch.equal(block(x), x)


@pytest.mark.parametrize("name", ["movinet_a0", "movinet_micro"])
def test_features_then_head_equals_forward(name: str) -> None:
    model = _build(name)
    _set_alphas(model, 0.5)
    x = _clip(_test_input(name))
    with torch.inference_mode():
        features = model.forward_features(x)
        assert features.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), model(x))


def test_reset_classifier_changes_class_count() -> None:
    model = _build("movinet_micro")
    features_before = model.num_features
    model.reset_classifier(5)
    with torch.inference_mode():
        assert model(_clip(_test_input("movinet_micro"))).shape == (2, 5)
    assert model.num_classes == 5 and model.num_features == features_before
    assert model.state_dict()["classifier.3.conv_1.conv3d.weight"].shape[0] == 5
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(0)


def _conv_keys(prefix: str, *, norm: bool = True, bias: bool = False) -> set[str]:
    keys = {f"{prefix}.conv_1.conv3d.weight"}
    if bias:
        keys.add(f"{prefix}.conv_1.conv3d.bias")
    if norm:
        keys |= {f"{prefix}.conv_1.norm.{k}" for k in BN_KEYS}
    return keys


def _documented_keys(spec: MoViNetSpec) -> set[str]:
    """The layout of the PyTorch conversion, written out from the module docstring's rules."""
    keys = _conv_keys("conv1") | _conv_keys("conv7")
    keys |= _conv_keys("classifier.0", norm=False, bias=True)
    keys |= _conv_keys("classifier.3", norm=False, bias=True)
    channels = spec.stem.filters
    for i, stage in enumerate(spec.stages):
        for j, layer in enumerate(stage.layers):
            p = f"blocks.b{i}_l{j}"
            keys |= _conv_keys(f"{p}.expand") | _conv_keys(f"{p}.deep") | _conv_keys(f"{p}.project")
            keys |= _conv_keys(f"{p}.se.fc1", norm=False, bias=True)
            keys |= _conv_keys(f"{p}.se.fc2", norm=False, bias=True)
            keys.add(f"{p}.alpha")
            if layer.stride != (1, 1, 1):
                keys |= _conv_keys(f"{p}.res.1")
            elif channels != stage.base_filters:
                keys |= _conv_keys(f"{p}.res.0")
            channels = stage.base_filters
    return keys


@pytest.mark.parametrize(
    ("name", "variant"),
    [("movinet_a0", "a0"), ("movinet_a1", "a1"), ("movinet_a2", "a2"), ("movinet_micro", "micro")],
)
def test_state_dict_follows_the_conversion_layout(name: str, variant: str) -> None:
    keys = set(create_model(name).state_dict())
    assert keys == _documented_keys(MOVINET_SPECS[variant])


def test_movinet_a0_layout_and_size() -> None:
    model = create_model("movinet_a0")
    state = model.state_dict()
    shapes = {
        "conv1.conv_1.conv3d.weight": (8, 3, 1, 3, 3),
        "conv1.conv_1.norm.weight": (8,),
        "blocks.b0_l0.expand.conv_1.conv3d.weight": (24, 8, 1, 1, 1),
        "blocks.b0_l0.deep.conv_1.conv3d.weight": (24, 1, 1, 5, 5),
        "blocks.b0_l0.se.fc1.conv_1.conv3d.weight": (8, 24, 1, 1, 1),
        "blocks.b0_l0.se.fc2.conv_1.conv3d.bias": (24,),
        "blocks.b0_l0.project.conv_1.conv3d.weight": (8, 24, 1, 1, 1),
        "blocks.b0_l0.res.1.conv_1.conv3d.weight": (8, 8, 1, 1, 1),
        "blocks.b0_l0.alpha": (),
        "blocks.b2_l0.deep.conv_1.conv3d.weight": (184, 1, 5, 3, 3),
        "blocks.b4_l3.deep.conv_1.conv3d.weight": (344, 1, 1, 5, 5),
        "conv7.conv_1.conv3d.weight": (480, 104, 1, 1, 1),
        "classifier.0.conv_1.conv3d.weight": (2048, 480, 1, 1, 1),
        "classifier.3.conv_1.conv3d.weight": (600, 2048, 1, 1, 1),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert "blocks.b3_l0.res.0.conv_1.conv3d.weight" not in state  # 56 -> 56, stride 1
    assert len(state) == 385
    assert 2_900_000 <= sum(p.numel() for p in model.parameters()) <= 3_300_000


# Trainable parameters of the TF Model Garden MovinetClassifier (600 classes), counted by
# bench/movinet_equivalence.py; the paper's A2 figure (4.8M) is the 400-class head (4,839,762).
REFERENCE_PARAMETERS = {
    "movinet_a0": 3_111_799,
    "movinet_a1": 4_690_296,
    "movinet_a2": 5_249_562,
    "movinet_a0_stream": 3_748_031,
    "movinet_a1_stream": 6_447_352,
    "movinet_a2_stream": 7_326_962,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMETERS))
def test_parameter_counts_equal_the_reference(name: str) -> None:
    assert sum(p.numel() for p in create_model(name).parameters()) == REFERENCE_PARAMETERS[name]


def test_a2_paper_count_is_the_400_class_head() -> None:
    assert sum(p.numel() for p in create_model("movinet_a2", num_classes=400).parameters()) == (
        4_839_762
    )


def test_stream_layout_splits_temporal_kernels() -> None:
    state = create_model("movinet_a0_stream").state_dict()
    spec = MOVINET_SPECS["a0"]
    assert tuple(state["blocks.b2_l0.deep.conv_1.conv3d.weight"].shape) == (184, 1, 1, 3, 3)
    assert tuple(state["blocks.b2_l0.deep.conv_2.conv3d.weight"].shape) == (184, 1, 5, 1, 1)
    assert "blocks.b2_l0.deep.conv_2.norm.running_var" in state
    assert "blocks.b0_l0.deep.conv_2.conv3d.weight" not in state  # 1x5x5: nothing temporal
    assert tuple(state["blocks.b0_l0.se.fc1.conv_1.conv3d.weight"].shape) == (16, 48, 1, 1, 1)
    temporal = sum(layer.kernel_size[0] > 1 for st in spec.stages for layer in st.layers)
    assert sum(k.endswith("deep.conv_2.conv3d.weight") for k in state) == temporal


def _stream_model(name: str = "movinet_a0_stream") -> MoViNet:
    model = _trained_looking(name)
    assert isinstance(model, MoViNet)
    return model


@pytest.mark.parametrize("chunks", [(1,) * 6, (2, 1, 3), (6,)])
def test_stream_frame_by_frame_equals_one_pass(chunks: tuple[int, ...]) -> None:
    model = _stream_model()
    clip = torch.randn(2, 3, sum(chunks), 32, 32)
    with torch.inference_mode():
        whole = model(clip)
        state = None
        start = 0
        for size in chunks:
            logits, state = model.forward_stream(clip[:, :, start : start + size], state)
            start += size
    assert (logits - whole).abs().max().item() <= 1e-5
    assert state is not None and "head.pool_count" in state


def test_stream_logits_never_see_the_future() -> None:
    model = _stream_model()
    clip = torch.randn(1, 3, 5, 32, 32)
    changed = clip.clone()
    changed[:, :, 3:] = torch.randn(1, 3, 2, 32, 32)
    with torch.inference_mode():
        early, _ = model.forward_stream(clip[:, :, :3])
        assert torch.allclose(early, model(changed[:, :, :3]), atol=1e-6)
        _, state = model.forward_stream(clip[:, :, :3])
        late, _ = model.forward_stream(changed[:, :, 3:], state)
        assert torch.allclose(late, model(changed), atol=1e-5)


def test_base_models_do_not_stream() -> None:
    with pytest.raises(ValueError, match="causal"):
        _build("movinet_micro").forward_stream(torch.rand(1, 3, 1, 32, 32))


def test_stream_state_is_bounded() -> None:
    model = _stream_model()
    with torch.inference_mode():
        _, state = model.forward_stream(torch.randn(1, 3, 2, 32, 32))
        sizes = {k: v.numel() for k, v in state.items()}
        _, state = model.forward_stream(torch.randn(1, 3, 3, 32, 32), state)
    assert {k: v.numel() for k, v in state.items()} == sizes


def _trained_looking(name: str, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    _set_alphas(model, 0.3)
    spec = _test_input(name)
    model.train()
    with torch.no_grad():
        model(_clip(spec, batch=4))  # moves the BatchNorm running statistics
    return model.eval()


@pytest.mark.parametrize(
    ("name", "kwargs"), [("movinet_micro", {}), ("movinet_a0", {"padding": "symmetric"})]
)
def test_safetensors_round_trip(tmp_path: Path, name: str, kwargs: dict[str, Any]) -> None:
    model = _trained_looking(name, **kwargs)
    path = save_weights(model, tmp_path / f"{name}.safetensors", model_config(model))
    loaded = create_model(name, weights=path)
    assert isinstance(loaded, MoViNet)
    assert model_config(loaded) == model_config(model)
    assert loaded.padding == model.padding
    x = _clip(_test_input(name))
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_wrong_class_count_fails_loudly(tmp_path: Path) -> None:
    model = _trained_looking("movinet_micro")
    with_config = save_weights(model, tmp_path / "micro.safetensors", model_config(model))
    with pytest.raises(WeightsError, match="16 classes"):
        create_model("movinet_micro", num_classes=10, weights=with_config)

    bare = tmp_path / "micro_bare.safetensors"  # a converted checkpoint carries no config
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    with pytest.raises(WeightsError, match=r"shape mismatch.*classifier\.3\.conv_1\.conv3d"):
        create_model("movinet_micro", num_classes=10, weights=bare)
    loaded = create_model("movinet_micro", weights=bare)  # same class count: loads strictly
    x = _clip(_test_input("movinet_micro"))
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def _ones_conv(padding: PaddingMode) -> ConvBlock:
    block = ConvBlock(1, 1, kernel_size=(1, 3, 3), stride=(1, 2, 2), norm=False, padding=padding)
    nn.init.ones_(block.conv.weight)
    return block.eval()


def test_tf_same_padding_puts_the_extra_pixel_after() -> None:
    even = torch.ones(1, 1, 1, 4, 4)
    with torch.inference_mode():
        tf_out = _ones_conv("tf_same")(even)[0, 0, 0]
        sym_out = _ones_conv("symmetric")(even)[0, 0, 0]
        # TF 'same' on an even size pads 0 before and 1 after; symmetric pads 1 on both sides.
        assert tf_out.tolist() == [[9.0, 6.0], [6.0, 4.0]]
        assert sym_out.tolist() == [[4.0, 6.0], [6.0, 9.0]]
        odd = torch.ones(1, 1, 1, 5, 5)  # odd sizes pad 1 on both sides either way
        assert torch.equal(_ones_conv("tf_same")(odd), _ones_conv("symmetric")(odd))


@pytest.mark.parametrize("padding", ["symmetric", "tf_same"])
@pytest.mark.parametrize(("size", "out"), [(4, 2), (5, 3), (2, 1), (1, 1)])
def test_skip_pool_ignores_padding(padding: PaddingMode, size: int, out: int) -> None:
    pool = SkipPool((1, 2, 2), padding=padding)
    x = torch.full((2, 3, 2, size, size), 7.0)
    y = pool(x)
    assert y.shape == (2, 3, 2, out, out)
    torch.testing.assert_close(y, torch.full_like(y, 7.0))


def test_skip_pool_windows() -> None:
    x = torch.arange(16.0).reshape(1, 1, 1, 4, 4)
    tf = SkipPool((1, 2, 2), padding="tf_same")(x)[0, 0, 0]
    sym = SkipPool((1, 2, 2), padding="symmetric")(x)[0, 0, 0]
    assert float(tf[0, 0]) == float(x[..., 0:3, 0:3].mean())
    assert float(tf[1, 1]) == float(x[..., 2:4, 2:4].mean())
    assert float(sym[0, 0]) == float(x[..., 0:2, 0:2].mean())


@pytest.mark.parametrize("hw", [(32, 32), (31, 33), (18, 20)])
def test_padding_modes_agree_on_shapes(hw: tuple[int, int]) -> None:
    shapes = {}
    for padding in ("symmetric", "tf_same"):
        model = _build("movinet_micro", padding=padding)
        seen: list[tuple[int, ...]] = []
        for block in model.blocks:
            block.register_forward_hook(
                lambda _m, _i, out, seen=seen: seen.append(tuple(out.shape))
            )
        with torch.inference_mode():
            model(torch.rand(1, 3, 2, *hw))
        shapes[padding] = seen
    assert shapes["symmetric"] == shapes["tf_same"]
    assert shapes["tf_same"][-1][-2:] == tuple(-(-n // 16) for n in hw)  # four stride-2 stages


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="padding"):
        create_model("movinet_micro", padding="reflect")
    with pytest.raises(TypeError):
        create_model("movinet_micro", widht=3)
    model = _build("movinet_micro")
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.rand(2, 16, 32, 32, 3))


def test_stream_model_serves_whole_clips() -> None:
    from victim_server.inference.preprocess import preprocess
    from victim_server.inference.runner import ModelRunner

    spec = _test_input("movinet_a0_stream")
    model = create_model("movinet_a0_stream", num_classes=7, input_spec=spec)
    assert isinstance(model, MoViNet)
    runner = ModelRunner(model, model_config(model), torch.device("cpu"))
    clips = torch.randint(0, 256, (2, 6, 40, 48, 3), dtype=torch.uint8).numpy()  # resampled
    (answer,) = runner([clips])
    assert answer.logits.shape == (2, 7)
    x = preprocess(clips, spec, device=torch.device("cpu"))
    with torch.inference_mode():
        state = None
        for t in range(spec.frames):
            streamed, state = model.forward_stream(x[:, :, t : t + 1], state)
    assert (torch.from_numpy(answer.logits) - streamed).abs().max().item() <= 1e-5
