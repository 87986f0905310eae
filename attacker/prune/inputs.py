"""What ``prune`` reads from a run directory: the resolved config, the transfer set, the
labelled evaluation clips and the exported student. A directory missing any of them is refused
with one line saying what is missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from attacker.config import AttackConfig, ConfigError, validate_config
from attacker.data import TransferSet
from attacker.eval.fidelity import EvalSet
from attacker.students import StudentModel, StudentWeightsError, load_exported_student

__all__ = ["EVAL_SET_FILE", "PruneInputError", "RunInputs", "load_run_inputs"]

EVAL_SET_FILE = "eval_set.npz"  # written by ``attacker run`` (attacker.run.EVAL_SET_FILE)
CONFIG_FILE = "config.resolved.yaml"


class PruneInputError(ValueError):
    """A run directory ``prune`` cannot use; the message is one line."""


@dataclass(frozen=True)
class RunInputs:
    run_dir: Path
    config: AttackConfig
    transfer: TransferSet
    eval_set: EvalSet
    student: StudentModel  # the run's exported (dense) student, eval mode

    @property
    def labelled_clips(self) -> int:
        """Transfer-set clips that carry a true label (a grey-box labelled subset)."""
        return sum(r.true_label is not None for r in self.transfer.records)


def load_run_inputs(run_dir: Path) -> RunInputs:
    if not run_dir.is_dir():
        raise PruneInputError(f"{run_dir} is not a directory")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise PruneInputError(f"{run_dir} is not a run directory: no {CONFIG_FILE}")
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise PruneInputError(f"{config_path} does not hold a config mapping")
        config = validate_config(raw, source=str(config_path))
    except (yaml.YAMLError, ConfigError) as exc:
        raise PruneInputError(str(exc).splitlines()[0]) from None
    eval_path = run_dir / EVAL_SET_FILE
    if not eval_path.is_file():
        raise PruneInputError(
            f"{run_dir} has no {EVAL_SET_FILE} (runs before it was kept cannot be pruned; "
            "rerun `attacker run`, which pays nothing for cached answers)"
        )
    try:
        transfer = TransferSet(run_dir / "transfer")
    except (OSError, ValueError, KeyError) as exc:
        raise PruneInputError(f"{run_dir}/transfer is not a readable transfer set: {exc}") from None
    if len(transfer) == 0:
        raise PruneInputError(f"{run_dir}/transfer holds no clips")
    try:
        eval_set = EvalSet.load(eval_path)
        student = load_exported_student(run_dir / "student")
    except (ValueError, StudentWeightsError) as exc:
        raise PruneInputError(str(exc).splitlines()[0]) from None
    return RunInputs(run_dir, config, transfer, eval_set, student)
