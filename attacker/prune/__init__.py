"""Lottery-ticket pruning of a stolen student (``python -m attacker prune RUN_DIR``).

- :mod:`attacker.prune.masks`: global magnitude masks over conv/linear weights, held with
  ``torch.nn.utils.prune`` and made permanent for export.
- :mod:`attacker.prune.rewind`: the rewind point (weights after k steps) and rewinding.
- :mod:`attacker.prune.lottery`: the rounds (train, prune, rewind, retrain, measure).
- :mod:`attacker.prune.inputs` / :mod:`attacker.prune.stage` / :mod:`attacker.prune.report`:
  the run directory in, RUN_DIR/prune/ out.
"""

from attacker.prune.inputs import PruneInputError
from attacker.prune.lottery import PruneSettings
from attacker.prune.stage import prune_run

__all__ = ["PruneInputError", "PruneSettings", "prune_run"]
