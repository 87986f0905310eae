"""The loss registry, ``LossSpec`` from YAML, ``train.loss`` in the attack config, named parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from attacker.config import ConfigError, load_config, validate_config
from attacker.train.loss_registry import register_loss
from attacker.train.losses import (
    LOSSES,
    DistillLoss,
    DistillTargets,
    KLDistillation,
    LossSpec,
    TopKAwareLoss,
    build_configured_loss,
    build_loss,
    build_loss_from_spec,
    default_loss_for,
    get_loss_class,
    loss_names,
)
from shared.schemas import OutputMode

BASE: dict[str, Any] = {"budget": 10, "query": {"source": {"kind": "noise"}}}


def _train(train: dict[str, Any]) -> Any:
    return validate_config({**BASE, "train": train}).train


def test_the_registry_lists_every_loss_once() -> None:
    assert loss_names() == ["condi_sr", "hard_ce", "kl", "soft_ce", "topk"]
    assert set(LOSSES) == set(loss_names())
    assert get_loss_class("kl") is KLDistillation
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        get_loss_class("mse")


def test_register_loss_refuses_a_second_class_under_a_taken_name() -> None:
    class Other(DistillLoss):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_loss("kl")(Other)
    with pytest.raises(TypeError, match="DistillLoss"):
        register_loss("not_a_loss")(int)  # type: ignore[type-var]
    assert "not_a_loss" not in LOSSES


@pytest.mark.parametrize(
    ("given", "name", "params"),
    [
        ("kl", "kl", {}),
        ("auto", "auto", {}),
        ({"name": "kl", "temperature": 2}, "kl", {"temperature": 2.0}),
        ({"name": "topk", "tail": "bucket"}, "topk", {"tail": "bucket"}),
        ({"name": "hard_ce", "label_smoothing": 0.1}, "hard_ce", {"label_smoothing": 0.1}),
        ({"name": "condi_sr", "alpha": 0, "confidence": "soft"}, "condi_sr", None),
    ],
)
def test_spec_accepts_a_name_or_a_mapping(given: Any, name: str, params: Any) -> None:
    spec = LossSpec.model_validate(given)
    assert spec.name == name
    if params is not None:
        assert spec.params == params
    assert LossSpec.model_validate(spec.model_dump()) == spec  # round-trips as saved config


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ("mse", "train.loss: .*unknown loss 'mse'; choose one of"),
        ({"name": "kl", "temprature": 2}, "train.loss: .*no parameter.*'temprature'"),
        ({"name": "kl", "temperature": -1}, "train.loss: .*'kl'.*temperature must be > 0"),
        ({"name": "kl", "temperature": "hot"}, "train.loss: .*parameter 'temperature'"),
        ({"name": "topk", "tail": "fat"}, "train.loss: .*parameter 'tail'"),
        ({"name": "hard_ce", "temperature": 2}, "train.loss: .*'hard_ce' has no parameter"),
        ({"temprature": 2}, "train.loss: .*'auto': no loss takes parameter.*'temprature'"),
        ({"name": "topk", "tail": "bucket", "temperature": 2}, "train.loss: .*temperature=1"),
    ],
)
def test_bad_loss_specs_are_one_line_config_errors_naming_the_field(
    loss: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _train({"loss": loss})
    assert "\n" not in str(info.value)


def test_yaml_loss_mapping_reaches_the_built_loss(tmp_path: Path) -> None:
    path = tmp_path / "attack.yaml"
    path.write_text(
        "budget: 10\nquery: {source: {kind: noise}}\n"
        "train:\n  loss: {name: kl, temperature: 2}\n  true_label_weight: 0.5\n"
    )
    train = load_config(path).train
    loss = build_loss_from_spec(
        train.loss_spec(OutputMode.PROBS), OutputMode.PROBS, true_label_weight=0.5
    )
    assert isinstance(loss.distill, KLDistillation) and loss.distill.temperature == 2.0
    assert loss.true_label is not None and loss.true_label.weight == 0.5


def test_auto_resolves_per_mode() -> None:
    spec = LossSpec()
    for mode in OutputMode:
        loss = build_loss_from_spec(spec, mode, true_label_weight=0.0)
        assert type(loss.distill) is get_loss_class(default_loss_for(mode))
        assert loss.true_label is None


def test_auto_parameters_go_only_to_the_resolved_loss_that_takes_them() -> None:
    train = _train({"loss": {"name": "auto", "temperature": 4}})
    assert train.loss_spec(OutputMode.PROBS) == LossSpec.of("kl", temperature=4.0)
    assert train.loss_spec(OutputMode.TOPK).params == {"temperature": 4.0}
    assert train.loss_spec(OutputMode.LABEL) == LossSpec.of("hard_ce")  # takes no temperature


def test_deprecated_temperature_goes_only_to_losses_that_take_one() -> None:
    train = _train({"loss": "auto", "temperature": 3})
    assert train.loss_spec(OutputMode.PROBS).params == {"temperature": 3.0}
    assert train.loss_spec(OutputMode.LABEL).params == {}  # hard_ce has none
    assert train.loss_spec("topk").params == {"temperature": 3.0}
    named = _train({"loss": {"name": "condi_sr", "alpha": 0.5}, "temperature": 2})
    assert named.loss_spec("logits").params == {"alpha": 0.5, "temperature": 2.0}
    # The spec's own temperature wins; the same value twice is allowed, two values are not.
    same = _train({"loss": {"name": "kl", "temperature": 2}, "temperature": 2})
    assert same.loss_spec("probs").params == {"temperature": 2.0}
    with pytest.raises(ConfigError, match=r"train: .*disagrees with train\.loss\.temperature"):
        _train({"loss": {"name": "kl", "temperature": 2}, "temperature": 3})
    assert _train({}).temperature is None


def test_build_configured_loss_takes_a_name_or_a_spec() -> None:
    by_name = build_configured_loss("kl", "probs", temperature=4.0, true_label_weight=0.0)
    assert isinstance(by_name.distill, KLDistillation) and by_name.distill.temperature == 4.0
    spec = LossSpec.model_validate({"name": "kl", "temperature": 2})
    by_spec = build_configured_loss(spec, "probs", temperature=4.0, true_label_weight=0.0)
    assert isinstance(by_spec.distill, KLDistillation) and by_spec.distill.temperature == 2.0
    label = build_configured_loss(LossSpec(), "label", temperature=4.0, true_label_weight=1.0)
    assert label.name == "hard_ce"


def test_build_loss_errors_are_one_line_value_errors() -> None:
    for call in (
        lambda: build_loss("kl", "probs", temperature="hot"),
        lambda: build_loss("kl", "label"),
        lambda: build_loss("nope", "probs"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert "\n" not in str(info.value)


def test_every_part_is_logged_separately() -> None:
    torch.manual_seed(0)
    s = torch.randn(6, 5)
    probs = torch.softmax(torch.randn(6, 5), dim=1)
    score, index = probs.topk(2, dim=1)
    targets = DistillTargets(
        topk_index=index,
        topk_score=score,
        label=index[:, 0],
        true_label=torch.tensor([0, -1, -1, 3, -1, -1]),
    )
    loss = build_loss("topk", "topk", rank_weight=0.5, true_label_weight=2.0)
    parts = loss(s, targets)
    logged = parts.as_floats()
    assert set(logged) == {"loss", "distill", "true_label", "topk_match", "topk_rank"}
    assert logged["distill"] == pytest.approx(logged["topk_match"] + logged["topk_rank"])
    assert logged["loss"] == pytest.approx(logged["distill"] + logged["true_label"])
    assert logged["topk_rank"] > 0 and logged["true_label"] > 0
    assert isinstance(loss.distill, TopKAwareLoss)
    assert parts.distill.item() == pytest.approx(loss.distill(s, targets).item())
    plain = build_loss("topk", "topk")(s, targets).as_floats()
    assert set(plain) == {"loss", "distill", "true_label"}


def test_a_spec_without_parameters_equals_its_name() -> None:
    assert LossSpec() == "auto"
    assert LossSpec.model_validate("kl") == "kl"
    assert LossSpec.model_validate({"name": "kl", "temperature": 2}) != "kl"
    assert LossSpec.model_validate("kl") == LossSpec(name="kl")


def test_a_spec_prints_as_its_name_and_parameters() -> None:
    assert str(LossSpec()) == "auto"
    assert str(LossSpec.model_validate({"name": "topk", "tail": "bucket", "rank_weight": 1})) == (
        "topk(rank_weight=1.0, tail='bucket')"
    )
