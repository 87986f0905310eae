"""Everything a request handler needs, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from victim_server.accounting.keys import KeyStore
from victim_server.accounting.ledger import Ledger
from victim_server.accounting.reconcile import Reconciler
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

    @property
    def model_config(self) -> ModelConfig:
        return self.runner.config
