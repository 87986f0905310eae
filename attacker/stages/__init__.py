"""The attacker's pipeline as stages with typed inputs and outputs; ``attacker.run`` composes
them, and DDP retraining and the benches call the same ones.

- :mod:`attacker.stages.collect`: source -> cache -> victim -> transfer set; the eval set.
- :mod:`attacker.stages.train`: the student, its loss, training over the budget points.
- evaluation: :func:`attacker.eval.fidelity.evaluate` after each point.
- :mod:`attacker.stages.report`: report.json / report.md / plot.
"""
