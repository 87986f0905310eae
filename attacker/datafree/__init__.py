"""A data-free attack for video (DFME / MAZE style): a generator trained against the student,
the victim's side of its gradient estimated from paid forward differences.

- :mod:`~attacker.datafree.config`: the ``query.datafree`` YAML section.
- :mod:`~attacker.datafree.generators`: latent -> clip generators with temporal structure.
- :mod:`~attacker.datafree.zeroth_order`: lattice probes and the forward-difference estimate.
- :mod:`~attacker.datafree.answers`: victim answers -> mean-centred logits; top-k/labels refused.
- :mod:`~attacker.datafree.oracle`: the paid query path (cache, budget, transfer set).
- :mod:`~attacker.datafree.loop`: the adversarial loop.

The stage that runs it in an attack is :mod:`attacker.stages.datafree`. Only the config is
imported here, so reading a config does not build the loop.
"""

from attacker.datafree.config import DataFreeSection, GeneratorSection

__all__ = ["DataFreeSection", "GeneratorSection"]
