"""SynthActions: procedurally generated action videos whose classes are defined by motion."""

from shared.synthactions.dataset import DEFAULT_FRAMES, DEFAULT_SIZE, NUM_CLASSES, SynthActions
from shared.synthactions.motions import CLASS_NAMES

__all__ = ["CLASS_NAMES", "DEFAULT_FRAMES", "DEFAULT_SIZE", "NUM_CLASSES", "SynthActions"]
