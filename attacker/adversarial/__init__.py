"""Transfer adversarial attacks: PGD on the stolen clone, sent to the victim through its API.

``python -m attacker transfer RUN_DIR`` crafts L-inf PGD clips on the run's exported student (white
box to the attacker), pays the victim for its answers to them (budget-checked, cached, never twice)
and reports the transfer success rate next to a random-sign-noise control of the same norm.

Modules: ``options`` (what to craft), ``pgd`` (the attack and the noise control, on any
differentiable classifier of uint8-range clips), ``differentiable`` (a student as such a
classifier), ``answers`` (victim top-1 answers through the Collector and the answer cache),
``rates`` (success-rate definitions), ``stage`` (the whole measurement), ``report`` (JSON +
Markdown), ``command`` (the CLI's request, defaults read from the run directory).
"""

from attacker.adversarial.answers import InsufficientBudget, VictimAnswers, victim_top1
from attacker.adversarial.differentiable import LogitsFn, student_logits_fn
from attacker.adversarial.options import PERTURBATIONS, Perturbation, PGDOptions
from attacker.adversarial.pgd import integer_radius, perturbation_shape, pgd_linf, sign_noise
from attacker.adversarial.rates import FlipRate, flip_rate

__all__ = [
    "PERTURBATIONS",
    "FlipRate",
    "InsufficientBudget",
    "LogitsFn",
    "PGDOptions",
    "Perturbation",
    "VictimAnswers",
    "flip_rate",
    "integer_radius",
    "perturbation_shape",
    "pgd_linf",
    "sign_noise",
    "student_logits_fn",
    "victim_top1",
]
