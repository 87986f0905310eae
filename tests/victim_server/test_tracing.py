"""The model runner serves a frozen TorchScript trace on the CPU only when it answers as the eager
model does; a model whose trace differs, or that cannot be traced, is served eagerly."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from shared.synthactions import SynthActions
from victim_server.inference import tracing
from victim_server.inference.runner import ModelRunner
from victim_server.models import create_model, model_config
from victim_server.models.config import InputSpec, ModelConfig

SPEC = InputSpec(frames=4, height=8, width=8)
CONFIG = ModelConfig(
    architecture="test", num_classes=3, input=SPEC, labels=("a", "b", "c"), tag="test"
)


def _clips(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.integers(0, 256, (n, SPEC.frames, SPEC.height, SPEC.width, 3), dtype=np.uint8)


class _BakesTheBatchSize(nn.Module):
    """Its Python int of the batch size becomes a constant in a trace."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = int(x.shape[0])
        return self.head(x.mean(dim=(2, 3, 4))) * batch


class _RefusesTracing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise RuntimeError("this model cannot be traced")
        return self.head(x.mean(dim=(2, 3, 4)))


def test_the_embedded_model_is_served_traced_with_the_eager_answers() -> None:
    torch.manual_seed(0)
    net = create_model("embedded")
    eager = ModelRunner(net, model_config(net), torch.device("cpu"))
    traced = ModelRunner(net, model_config(net), torch.device("cpu"), trace=True)
    assert traced.traced and not eager.traced
    clips, _ = SynthActions(seed=99).batch(0, 7)
    requests = [clips[:1], clips[1:6], clips[6:]]  # batch sizes the trace was not made at
    for want, got in zip(eager(requests), traced(requests), strict=True):
        np.testing.assert_allclose(got.logits, want.logits, rtol=1e-4, atol=1e-4)
        assert want.features is not None and got.features is not None
        np.testing.assert_allclose(got.features, want.features, rtol=1e-4, atol=1e-4)
        assert (got.logits.argmax(1) == want.logits.argmax(1)).all()


@pytest.mark.parametrize("model_class", [_BakesTheBatchSize, _RefusesTracing])
def test_a_model_whose_trace_is_wrong_or_impossible_is_served_eagerly(
    model_class: type[nn.Module], caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = model_class()
    runner = ModelRunner(model, CONFIG, torch.device("cpu"), trace=True)
    assert not runner.traced
    assert "serving the eager model" in caplog.text
    clips = _clips(5)  # a batch size the trace was not made at: the baked one would be wrong
    eager = ModelRunner(model, CONFIG, torch.device("cpu"))
    np.testing.assert_allclose(runner([clips])[0].logits, eager([clips])[0].logits)


def test_tracing_is_off_unless_asked() -> None:
    net = create_model("embedded")
    assert not ModelRunner(net, model_config(net), torch.device("cpu")).traced


def test_a_model_too_slow_for_the_trace_to_pay_is_served_eagerly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vidsteal.victim")
    monkeypatch.setattr(tracing, "WORTH_TRACING_S", 0.0)  # every pass counts as slow
    net = create_model("embedded")
    runner = ModelRunner(net, model_config(net), torch.device("cpu"), trace=True)
    assert not runner.traced
    assert "too long for the GIL's per-op cost to matter" in caplog.text
