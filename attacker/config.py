"""The attack's configuration: one YAML file, validated by pydantic, overridable from the CLI.

String values may reference environment variables as ``${NAME}`` (e.g. the API key), so secrets
stay out of config files; when NAME is unset, ``NAME_FILE`` may name a file holding the value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from attacker.active.config import SelectConfig
from attacker.datafree.config import DataFreeSection
from attacker.sources import SourceConfig, SourceError, factor_classes
from attacker.train.losses import LossSpec, Need, get_loss_class
from shared.schemas import OutputMode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VictimConfig(_Strict):
    url: str = "http://127.0.0.1:8000"
    api_key: str = Field(default="", description="API key paying for the attack queries")
    eval_api_key: str | None = Field(
        default=None, description="Separate key for the evaluation clips (default: api_key)"
    )
    timeout_s: float = 120.0
    compression: Literal["zstd", "gzip"] | None = None


class QueryConfig(_Strict):
    source: SourceConfig = Field(discriminator="kind")
    batch_clips: Annotated[int, Field(ge=1, le=256)] = 32
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    max_attempts: Annotated[int, Field(ge=1)] = 8
    # Data-free attack (attacker.datafree): a generator makes every clip; no source is read.
    datafree: DataFreeSection | None = None

    @model_validator(mode="before")
    @classmethod
    def _datafree_has_no_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("datafree") is not None:
            if data.get("source") is not None:
                raise ValueError("query.datafree generates every clip itself: remove query.source")
            # Never built: a data-free run reads no source (the report names it "datafree").
            data = {**data, "source": {"kind": "noise"}}
        return data

    # Active selection (attacker.active): pay only for the clips a strategy picks from a larger
    # locally drawn pool, in rounds, retraining between rounds. None: the source's stream as is.
    select: SelectConfig | None = None

    @model_validator(mode="after")
    def _bandit_needs_parts(self) -> QueryConfig:
        if self.select is not None and self.select.strategy == "bandit":
            parts = getattr(self.source, "parts", ())
            if self.source.kind != "mix" or len(parts) < 2:
                raise ValueError(
                    "select.strategy bandit chooses between the parts of a mix source: "
                    "give query.source as {kind: mix, parts: [...]} with at least two parts"
                )
        return self


class StudentSection(_Strict):
    architecture: str = "tiny3d"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    backbone_weights: Path | None = None
    frames: int | None = None  # default: the victim's input spec
    height: int | None = None
    width: int | None = None


class PretextSection(_Strict):
    """Pre-train the student on the query source's own recipes before distilling
    (attacker/train/pretext.py): ``steps`` optimiser steps of ``batch_size`` on ``clips`` unpaid
    clips of the source, at ``lr`` (default: ``train.lr``). The weights are cached in
    ``cache_dir`` (default: the run's checkpoints folder)."""

    steps: Annotated[int, Field(ge=1)] = 4000
    clips: Annotated[int, Field(ge=2)] = 20000
    batch_size: Annotated[int, Field(ge=1)] = 64
    lr: Annotated[float, Field(gt=0)] | None = None
    cache_dir: Path | None = None


class TrainSection(_Strict):
    # `auto` (the output mode's default), a name (`kl`), or `{name: kl, temperature: 2}`; names
    # and parameters are checked against the loss registry (attacker.train.losses).
    loss: LossSpec = Field(default_factory=LossSpec)
    # Deprecated shortcut for `loss: {name: ..., temperature: T}`: given to the loss when it takes
    # a temperature and the spec sets none.
    temperature: Annotated[float, Field(gt=0)] | None = None
    true_label_weight: Annotated[float, Field(ge=0)] = 0.0
    # continual: one student trained on as the transfer set grows, each budget point adding
    # `epochs` passes' worth of steps over the clips that point added (compute grows with the
    # data; every step draws from all clips so far). fresh: a new student per point, trained
    # `epochs` passes over that point's clips.
    plan: Literal["continual", "fresh"] = "continual"
    epochs: Annotated[float, Field(gt=0)] = 16
    min_steps: Annotated[int, Field(ge=0)] = 0  # at least this many steps per budget point
    # Caps the clip-steps (steps x batch) of one budget point.
    max_clip_steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] = 64
    lr: Annotated[float, Field(gt=0)] = 3e-3
    # A loss that learns from the victim's top-1 label only (`hard_ce`, what `auto` means for a
    # label-only key) trains at `lr` times this: one-hot targets are a noisier signal than soft
    # ones, and at the soft-target rate the deeper student collapsed to one class (see README).
    hard_label_lr_ratio: Annotated[float, Field(gt=0, le=1)] = 1 / 3
    backbone_lr_ratio: Annotated[float, Field(gt=0, le=1)] = 1.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.05
    schedule: Literal["cosine", "plateau"] = "cosine"
    warmup_steps: Annotated[int, Field(ge=0)] = 50
    threads: Annotated[int, Field(ge=0)] = 0  # torch threads while training (0: torch's default)
    # auto: bfloat16 autocast where the hardware has bf16 units (AMX / AVX512-BF16 CPUs, CUDA),
    # float32 elsewhere.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # Mixup of queried clips: each batch mixed with a shuffled copy of itself, lam ~ Beta(alpha,
    # alpha), the loss mixed the same way (attacker/train/mixup.py). 0 turns it off.
    mixup: Annotated[float, Field(ge=0)] = 0.0
    # Pre-training on the query source's recipes before the first answer is used (off: null).
    pretext: PretextSection | None = None

    @model_validator(mode="after")
    def _one_temperature(self) -> TrainSection:
        given = self.loss.params.get("temperature")
        if self.temperature is not None and given is not None and given != self.temperature:
            raise ValueError(
                f"train.temperature={self.temperature} (deprecated) disagrees with "
                f"train.loss.temperature={given}; set only train.loss.temperature"
            )
        return self

    def loss_spec(self, mode: OutputMode | str) -> LossSpec:
        """The loss to build for a key answering in ``mode``: ``auto`` resolved, the deprecated
        ``temperature`` applied (see ``LossSpec.resolve``)."""
        fallback = {} if self.temperature is None else {"temperature": self.temperature}
        return self.loss.resolve(mode, fallback=fallback)

    def lr_for(self, mode: OutputMode | str) -> float:
        """The learning rate for a key answering in ``mode``: ``lr``, times
        ``hard_label_lr_ratio`` when the resolved loss learns from labels only."""
        hard = get_loss_class(self.loss_spec(mode).name).need is Need.LABEL
        return self.lr * (self.hard_label_lr_ratio if hard else 1.0)


class EvalSection(_Strict):
    source: SourceConfig | None = Field(default=None, discriminator="kind")
    clips: Annotated[int, Field(ge=1)] = 1000
    points: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [1.0])

    @model_validator(mode="after")
    def _sorted_points(self) -> EvalSection:
        self.points = sorted(set(self.points))
        if self.points[-1] != 1.0:
            self.points.append(1.0)
        return self


class StealthSection(_Strict):
    """Shape the query stream to keep a locally computed PRADA W above ``target_w``."""

    enabled: bool = False
    natural: SourceConfig | None = Field(default=None, discriminator="kind")
    target_w: Annotated[float, Field(gt=0, lt=1)] = 0.95
    calibration_clips: Annotated[int, Field(ge=50)] = 400
    start_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    min_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    max_fraction: Annotated[float, Field(ge=0, le=1)] = 1.0
    min_spacing: Annotated[float, Field(ge=0)] = 0.05

    @model_validator(mode="after")
    def _needs_natural(self) -> StealthSection:
        if self.enabled and self.natural is None:
            raise ValueError("stealth needs a natural source to mix in (stealth.natural)")
        return self


class AttackConfig(_Strict):
    name: str = "attack"
    victim: VictimConfig = Field(default_factory=VictimConfig)
    budget: Annotated[int, Field(ge=1)]
    seed: int = 0
    redis_url: str = "redis://127.0.0.1:6379/0"
    out: Path = Path("runs/attack")
    query: QueryConfig
    student: StudentSection = Field(default_factory=StudentSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    stealth: StealthSection = Field(default_factory=StealthSection)
    metrics_port: int | None = None

    @model_validator(mode="after")
    def _datafree_needs_eval_source(self) -> AttackConfig:
        if self.query.datafree is not None:
            if self.eval.source is None:
                raise ValueError(
                    "query.datafree has no query source to hold clips out from: set eval.source"
                )
            if self.stealth.enabled or self.query.select is not None:
                raise ValueError(
                    "query.datafree, query.select and stealth each decide what is sent: pick one"
                )
        return self

    @model_validator(mode="after")
    def _pretext_reads_the_source(self) -> AttackConfig:
        if self.train.pretext is None:
            return self
        if self.query.datafree is not None:
            raise ValueError(
                "train.pretext pre-trains on the query source: a data-free run has none"
            )
        try:
            factor_classes(self.query.source)
        except SourceError as exc:
            raise ValueError(f"train.pretext: {exc}") from None
        return self

    @model_validator(mode="after")
    def _one_stream_shaper(self) -> AttackConfig:
        if self.stealth.enabled and self.query.select is not None:
            raise ValueError(
                "query.select and stealth both decide what is sent next; enable one of them"
            )
        return self


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line."""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in os.environ:
                return os.environ[name]
            # Docker's convention for secrets: NAME_FILE names a file that holds the value.
            path = os.environ.get(f"{name}_FILE")
            if path:
                try:
                    return Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
            raise ConfigError(f"config references ${{{name}}} but it is not set")

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> AttackConfig:
    """Read, expand ``${ENV}``, apply dotted overrides (``{"victim.url": ...}``), validate."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    # Overrides first, so a value given on the command line needs no ${ENV} to be set.
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        target = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    data = _expand_env(raw)
    return validate_config(data, source=str(path))


def validate_config(data: dict[str, Any], *, source: str = "config") -> AttackConfig:
    try:
        return AttackConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{source}: {where}: {first['msg']}") from None
