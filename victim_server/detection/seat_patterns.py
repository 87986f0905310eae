"""SEAT's bank of known attack patterns: which queries lie near what thieves send.

SEAT (Zhang, Chen, Wagner, AISec 2021) flags an account whose queries fall near each other *or
near known attack patterns*. The bank holds, in the SEAT encoder's space, ``patterns``: unit
embeddings of clips of generic extraction query families (``seat_families``), and
``references``: unit embeddings of benign clips. A contrastive encoder spreads distinct clips
over the sphere, so an attack clip is rarely within a fixed distance of one of a few hundred
patterns; what it is, is nearer the patterns than the benign references. A clip's score is

    d_k(clip, patterns) / d_k(clip, references)

(``d_k``: distance to the ``k``-th nearest, a k-nearest-neighbour density ratio), and it lies
*near a known attack pattern* when the score is below ``threshold``, calibrated on benign
SynthActions clips of a seed no part of SEAT has seen so that benign clips are rarely there.
Cost per clip: one (P + R) x dim matrix product, no state.

File: ``<encoder>.patterns.safetensors`` beside the encoder's weights (the default:
``victim_server/detection/weights/seat_encoder.patterns.safetensors``), built by ``python -m
victim_server build-seat-patterns``: tensors ``patterns`` float32 (P, dim), ``families`` int32
(P,) (index into ``record["families"]``), ``references`` float32 (R, dim); metadata ``record``
(JSON: ``k``, ``threshold``, ``families``, ``encoder_sha256`` of the weights it was embedded
with, and how it was built and calibrated).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

__all__ = ["PatternBank", "PatternBankError", "load_patterns", "patterns_path", "weights_sha256"]

_UNIT_TOLERANCE = 1e-3


class PatternBankError(ValueError):
    """The bank is missing, unreadable, malformed, or was built with another encoder."""


def patterns_path(weights: Path) -> Path:
    """Where the bank of the encoder at ``weights`` lives."""
    return weights.with_suffix(".patterns.safetensors")


def weights_sha256(weights: Path) -> str:
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def _kth_distances(vectors: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """(N,) distance from each unit vector to its ``k``-th nearest row of ``bank``."""
    squared = np.maximum(2.0 - 2.0 * (vectors @ bank.T), 0.0)
    return np.sqrt(np.partition(squared, k - 1, axis=1)[:, k - 1])


@dataclass(frozen=True)
class PatternBank:
    patterns: np.ndarray  # (P, dim) float32 unit vectors of attack-family clips
    families: np.ndarray  # (P,) int32, index into ``family_names``
    references: np.ndarray  # (R, dim) float32 unit vectors of benign clips
    family_names: tuple[str, ...]
    k: int
    threshold: float  # scores below it are near a known attack pattern
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """(N,) density ratios of (N, dim) unit vectors; lower is more attack-like."""
        if len(vectors) == 0:
            return np.zeros(0)
        near_attack = _kth_distances(vectors, self.patterns, self.k)
        near_benign = _kth_distances(vectors, self.references, self.k)
        return near_attack / np.maximum(near_benign, 1e-6)

    def flags(self, vectors: np.ndarray) -> np.ndarray:
        """(N,) bool: which clips lie near a known attack pattern."""
        return self.scores(vectors) < self.threshold

    def without(self, family: str) -> PatternBank:
        """The bank less one family's patterns (threshold unchanged; for leave-one-out)."""
        keep = self.families != self.family_names.index(family)
        return PatternBank(
            self.patterns[keep],
            self.families[keep],
            self.references,
            self.family_names,
            self.k,
            self.threshold,
            self.record,
        )

    def save(self, path: Path) -> None:
        record = {
            **self.record,
            "k": self.k,
            "threshold": self.threshold,
            "families": list(self.family_names),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "patterns": np.ascontiguousarray(self.patterns, dtype=np.float32),
                "families": np.ascontiguousarray(self.families, dtype=np.int32),
                "references": np.ascontiguousarray(self.references, dtype=np.float32),
            },
            str(path),
            metadata={"record": json.dumps(record)},
        )


def _validate(bank: PatternBank) -> None:
    for name in ("patterns", "references"):
        array = getattr(bank, name)
        if array.ndim != 2 or array.dtype != np.float32 or not len(array):
            raise PatternBankError(f"{name} must be a non-empty float32 (N, dim) array")
        if not np.isfinite(array).all():
            raise PatternBankError(f"{name} holds non-finite values")
        norms = np.linalg.norm(array, axis=1)
        if np.abs(norms - 1.0).max() > _UNIT_TOLERANCE:
            raise PatternBankError(f"{name} must be unit vectors (norms {norms.min():.3f}..)")
    if bank.patterns.shape[1] != bank.references.shape[1]:
        raise PatternBankError("patterns and references differ in dimension")
    if (
        bank.families.shape != (len(bank.patterns),)
        or not ((bank.families >= 0) & (bank.families < len(bank.family_names))).all()
    ):
        raise PatternBankError("families must index family names, one per pattern")
    if not 1 <= bank.k <= min(len(bank.patterns), len(bank.references)):
        raise PatternBankError(f"k={bank.k} must be in [1, the smaller of the two banks]")
    if not (np.isfinite(bank.threshold) and bank.threshold > 0):
        raise PatternBankError(f"threshold {bank.threshold} must be a positive number")


def load_patterns(path: Path, *, weights: Path, dim: int) -> PatternBank:
    """The bank at ``path``, checked against the encoder at ``weights`` (its SHA-256, its
    embedding ``dim``); raises :class:`PatternBankError` saying what is wrong and how to
    rebuild."""
    rebuild = f"python -m victim_server build-seat-patterns --weights {weights}"
    if not path.is_file():
        raise PatternBankError(f"no SEAT attack-pattern bank at {path}: run {rebuild}")
    try:
        with safe_open(str(path), framework="np") as handle:
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            record = json.loads((handle.metadata() or {})["record"])
        bank = PatternBank(
            arrays["patterns"],
            arrays["families"],
            arrays["references"],
            tuple(record["families"]),
            int(record["k"]),
            float(record["threshold"]),
            record,
        )
    except PatternBankError as exc:
        raise PatternBankError(f"the SEAT attack-pattern bank at {path} is invalid: {exc}") from exc
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as exc:
        raise PatternBankError(
            f"the SEAT attack-pattern bank at {path} cannot be read ({exc!r}): run {rebuild}"
        ) from exc
    if bank.patterns.shape[1] != dim:
        raise PatternBankError(
            f"the SEAT attack-pattern bank at {path} has dimension {bank.patterns.shape[1]}, "
            f"the encoder {dim}: run {rebuild}"
        )
    if record.get("encoder_sha256") != weights_sha256(weights):
        raise PatternBankError(
            f"the SEAT attack-pattern bank at {path} was embedded with another encoder than "
            f"{weights}: run {rebuild}"
        )
    return bank
