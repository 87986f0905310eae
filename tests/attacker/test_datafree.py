"""The data-free attack's parts: generators with temporal structure, the forward-difference
estimate against a known gradient, answers -> logits, differentiable student input, config,
the replay buffer and the student's learning-rate schedule."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from attacker.config import ConfigError, load_config, validate_config
from attacker.datafree.answers import DataFreeError, answer_logits, check_output_mode
from attacker.datafree.generators import GENERATORS, build_generator
from attacker.datafree.loop import quantise, scheduled_lr, student_input, student_loss
from attacker.datafree.replay import ReplayBuffer
from attacker.datafree.zeroth_order import forward_difference_gradient, lattice_probes
from attacker.students import StudentPreprocessing, student_preprocess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "datafree_generator.yaml"


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generated_clips_move_over_time(name: str) -> None:
    torch.manual_seed(0)
    generator = build_generator(name, latent_dim=16, frames=8, height=16, width=16, channels=8)
    z = generator.sample_latent(6, torch.Generator().manual_seed(1))
    clips = generator(z)
    assert clips.shape == (6, 8, 16, 16, 3)
    assert float(clips.detach().min()) >= 0.0 and float(clips.detach().max()) <= 1.0
    # Every clip changes from frame to frame (not one image repeated) ...
    step = (clips[:, 1:] - clips[:, :-1]).abs().mean(dim=(2, 3, 4))  # B T-1
    assert bool((step.mean(dim=1) > 1e-3).all()), step
    # ... and moves away from its first frame (an oscillation may come back to it at the end).
    away = (clips - clips[:, :1]).abs().mean(dim=(2, 3, 4)).amax(dim=1)
    assert bool((away > 1e-3).all()), away
    # Different latents give different clips, and the clip is differentiable in the parameters.
    assert float((clips[0] - clips[1]).abs().mean()) > 1e-3
    clips.mean().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in generator.parameters())


def test_unknown_generator_is_named() -> None:
    with pytest.raises(ValueError, match="unknown generator 'gan'; known: motion, conv3d"):
        build_generator("gan", latent_dim=4, frames=2, height=4, width=4)


def test_probes_stay_on_the_uint8_lattice() -> None:
    base = torch.tensor([[0, 128, 255, 1]], dtype=torch.uint8)
    probes, deltas = lattice_probes(
        base, directions=50, step=2, generator=torch.Generator().manual_seed(0)
    )
    assert probes.dtype == torch.uint8 and probes.shape == (1, 50, 4)
    assert torch.allclose(deltas * 255, (probes.int() - base.int().unsqueeze(1)).float())
    assert set(deltas[0, :, 1].mul(255).round().tolist()) == {-2.0, 2.0}
    assert deltas[0, :, 0].min() >= 0 and deltas[0, :, 2].max() <= 0  # clipped at 0 and 255


def test_forward_differences_recover_a_known_gradient() -> None:
    """f(x) = w . x + c |x|^2 over clips in [0, 1]: the estimate must point along the true
    gradient with the right scale (a flipped sign or a step missing from the scale fails)."""
    rng = torch.Generator().manual_seed(3)
    base = torch.randint(20, 236, (4, 2, 4, 4, 3), generator=rng, dtype=torch.uint8)
    w = torch.randn(2, 4, 4, 3, generator=rng)
    c = 0.7

    def f(x: torch.Tensor) -> torch.Tensor:  # x: (..., 2, 4, 4, 3) in [0, 1]
        return (x * w).flatten(-4).sum(-1) + c * x.pow(2).flatten(-4).sum(-1)

    step = 2
    probes, deltas = lattice_probes(base, directions=2000, step=step, generator=rng)
    x0 = base.float() / 255
    estimate = forward_difference_gradient(f(x0), f(probes.float() / 255), deltas, step=step / 255)
    true = w + 2 * c * x0
    for g, t in zip(estimate.flatten(1), true.flatten(1), strict=True):
        cosine = float(torch.dot(g, t) / (g.norm() * t.norm()))
        scale = float(torch.dot(g, t) / torch.dot(t, t))
        assert cosine > 0.85, cosine
        assert 0.85 < scale < 1.15, scale


def test_forward_difference_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="shapes disagree"):
        forward_difference_gradient(torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, 2, 5), step=1)


def test_answers_become_mean_centred_logits() -> None:
    probs = [{"probs": [0.5, 0.25, 0.25, 0.0]}]
    logits = answer_logits(probs, "probs", 4, floor=1e-6)
    expected = torch.log(torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64) + 1e-6)
    assert torch.allclose(logits[0].double(), expected - expected.mean(), atol=1e-5)
    raw = answer_logits([{"logits": [3.0, 1.0, -1.0, 1.0]}], "logits", 4, floor=1e-6)
    assert raw.tolist() == [[2.0, 0.0, -2.0, 0.0]]


@pytest.mark.parametrize("mode", ["topk", "label"])
def test_top_k_and_label_answers_are_refused(mode: str) -> None:
    with pytest.raises(DataFreeError, match=f"answers '{mode}'"):
        check_output_mode(mode)
    assert check_output_mode("probs").value == "probs"


def test_student_input_matches_the_students_preprocessing_and_passes_gradients() -> None:
    clips = np.random.default_rng(0).integers(0, 256, (2, 16, 32, 32, 3), dtype=np.uint8)
    prep = StudentPreprocessing(frames=8, height=24, width=24, mean=(0.4,) * 3, std=(0.2,) * 3)
    x = torch.from_numpy(clips).float().div(255).requires_grad_(True)
    ours = student_input(x, prep)
    assert torch.allclose(ours, student_preprocess(clips, prep), atol=1e-5)
    ours.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_quantise_rounds_with_a_straight_through_gradient() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 0.2001], requires_grad=True)
    rounded, levels = quantise(x)
    assert levels.tolist() == [0, 128, 255, 51]
    assert torch.allclose(rounded, torch.tensor([0, 128, 255, 51]) / 255.0)
    rounded.sum().backward()
    assert x.grad is not None and x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_student_losses_are_zero_at_the_target() -> None:
    target = torch.tensor([[1.0, -1.0, 0.0]])
    for kind in ("l1", "kl"):
        assert float(student_loss(target, target, kind=kind, temperature=2.0)) == pytest.approx(0)
        assert float(student_loss(-target, target, kind=kind, temperature=2.0)) > 0.1


def test_example_config_loads_and_needs_no_source() -> None:
    config = load_config(EXAMPLE, {"victim.api_key": "k", "victim.eval_api_key": "e"})
    assert config.query.datafree is not None and config.eval.source is not None
    assert config.query.datafree.generator_queries == 32 * 3
    assert config.query.datafree.round_queries == 32 * 3 + 3 * 64


def _minimal(**query: object) -> dict[str, object]:
    return {
        "budget": 10,
        "query": query,
        "eval": {"source": {"kind": "synthactions", "seed": 1}},
    }


def test_config_rejects_a_source_next_to_the_generator() -> None:
    with pytest.raises(ConfigError, match=r"remove query\.source"):
        validate_config(_minimal(datafree={}, source={"kind": "noise"}))


def test_config_needs_held_out_clips_from_somewhere() -> None:
    data = _minimal(datafree={})
    data.pop("eval")
    with pytest.raises(ConfigError, match=r"set eval\.source"):
        validate_config(data)
    with pytest.raises(ConfigError, match="directions"):
        validate_config(_minimal(datafree={"directions": 0}))


def test_replay_config_needs_both_a_buffer_and_steps() -> None:
    with pytest.raises(ConfigError, match="replay_size and replay_steps"):
        validate_config(_minimal(datafree={"replay_steps": 2}))
    with pytest.raises(ConfigError, match="replay_size and replay_steps"):
        validate_config(_minimal(datafree={"replay_size": 100}))
    config = validate_config(_minimal(datafree={"replay_size": 100, "replay_steps": 2}))
    assert config.query.datafree is not None and config.query.datafree.replay_steps == 2


def _clips(first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips whose every pixel is their index, and targets equal to it: rows stay identifiable."""
    ids = torch.arange(first, first + count)
    clips = ids.view(-1, 1, 1, 1, 1).expand(count, 2, 3, 3, 3).to(torch.uint8).contiguous()
    return clips, ids.view(-1, 1).float().expand(count, 4).contiguous()


def test_replay_buffer_keeps_the_newest_answers_with_their_targets() -> None:
    buffer = ReplayBuffer(capacity=5)
    buffer.add(*_clips(0, 3))
    assert len(buffer) == 3
    buffer.add(*_clips(3, 4))  # 7 added into 5 slots: 0 and 1 are gone
    assert len(buffer) == 5
    clips, targets = buffer.sample(200, torch.Generator().manual_seed(0))
    ids = clips[:, 0, 0, 0, 0].long()
    assert set(ids.tolist()) == {2, 3, 4, 5, 6}
    assert torch.equal(targets[:, 0].long(), ids)  # each clip comes back with its own target
    buffer.add(*_clips(10, 8))  # more than the capacity at once: the last 5 of them
    ids = buffer.sample(200, torch.Generator().manual_seed(1))[0][:, 0, 0, 0, 0]
    assert set(ids.tolist()) == {13, 14, 15, 16, 17}


def test_replay_buffer_refuses_float_clips_and_sampling_when_empty() -> None:
    buffer = ReplayBuffer(capacity=2)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(1, torch.Generator())
    clips, targets = _clips(0, 2)
    with pytest.raises(TypeError, match="uint8"):
        buffer.add(clips.float(), targets)
    with pytest.raises(ValueError, match="2 clips but 1 targets"):
        buffer.add(clips, targets[:1])
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)


def test_cosine_schedule_decays_the_student_lr_to_its_floor() -> None:
    assert scheduled_lr(0.002, "constant", 0.9) == 0.002
    assert scheduled_lr(0.002, "cosine", 0.0) == pytest.approx(0.002)
    assert scheduled_lr(0.002, "cosine", 0.5) == pytest.approx(0.002 * (0.05 + 0.95 * 0.5))
    assert scheduled_lr(0.002, "cosine", 1.0) == pytest.approx(0.0001)
    assert scheduled_lr(0.002, "cosine", 7.0) == pytest.approx(0.0001)  # past the budget
    rates = [scheduled_lr(1.0, "cosine", p / 10) for p in range(11)]
    assert all(a > b for a, b in itertools.pairwise(rates))
    with pytest.raises(ValueError, match="unknown"):
        scheduled_lr(1.0, "step", 0.5)
