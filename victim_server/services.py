"""Everything a request handler needs, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from redis.asyncio import Redis

from shared.schemas import DetectionPolicy
from victim_server.accounting.key_cache import KeyCache
from victim_server.accounting.keys import KeyStore
from victim_server.accounting.ledger import Ledger
from victim_server.accounting.reconcile import Reconciler
from victim_server.detection.base import DetectorUnavailable
from victim_server.detection.service import DetectionService
from victim_server.inference.batcher import MicroBatcher
from victim_server.inference.runner import BatchOutput, ModelRunner
from victim_server.metrics import VictimMetrics
from victim_server.models.config import ModelConfig
from victim_server.settings import Settings


@dataclass
class Services:
    settings: Settings
    redis: Redis
    keys: KeyStore
    ledger: Ledger
    runner: ModelRunner
    batcher: MicroBatcher[BatchOutput]
    metrics: VictimMetrics
    detection: DetectionService
    reconciler: Reconciler
    # Copies of key records for the classify path (the reserve script stays the authority).
    key_cache: KeyCache = field(init=False)
    # Randomness of answer defenses and poisoning: one generator per process, seeded from the OS
    # once (a fresh default_rng() per request reads OS entropy every time).
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __post_init__(self) -> None:
        self.key_cache = KeyCache(self.keys)

    @property
    def model_config(self) -> ModelConfig:
        return self.runner.config

    def default_detection(self) -> DetectionPolicy:
        """The detection policy of a key created without one (``settings.default_detector``)."""
        return default_detection(self.settings.default_detector, self.detection)


def default_detection(name: str, detection: DetectionService) -> DetectionPolicy:
    """``name``'s policy (action log); ``auto`` is ``ood`` where the served model has an OOD
    calibration, else ``none``. Raises :class:`DetectorUnavailable` when ``name`` cannot run."""
    if name == "auto":
        name = "ood" if _available(detection, "ood") else "none"
    policy = DetectionPolicy.model_validate({"detector": name})
    detector = detection.detector(policy)
    if detector is not None:
        detector.check()
    return policy


def _available(detection: DetectionService, name: str) -> bool:
    detector = detection.detectors.get(name)
    if detector is None:
        return False
    try:
        detector.check()
    except DetectorUnavailable:
        return False
    return True
