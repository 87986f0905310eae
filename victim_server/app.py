"""``create_app(settings)``: assembles the victim API. Nothing is built at import time."""

from __future__ import annotations

import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
import torch
from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from torch import nn

from shared.memory import reuse_freed_memory
from shared.schemas import KeyCreate
from victim_server.accounting.connection import connect_redis
from victim_server.accounting.keys import KeyStore
from victim_server.accounting.ledger import Ledger
from victim_server.accounting.reconcile import Reconciler
from victim_server.api import admin, classify, client, health
from victim_server.api.openapi import install_openapi
from victim_server.api.problems import install_problem_handlers
from victim_server.detection.base import DetectorUnavailable
from victim_server.detection.calibration import load_embedding, load_ood_calibration
from victim_server.detection.registry import build_detectors
from victim_server.detection.seat import SeatDetector
from victim_server.detection.service import DetectionService
from victim_server.inference.batcher import MicroBatcher
from victim_server.inference.runner import (
    BatchOutput,
    ModelRunner,
    resolve_device,
    serving_threads,
)
from victim_server.metrics import VictimMetrics
from victim_server.models import create_model, model_config
from victim_server.models.embedded import packaged_weights_path
from victim_server.script_pipeline import ScriptPipeline
from victim_server.services import Services
from victim_server.settings import Settings

log = logging.getLogger("vidsteal.victim")


def build_model(settings: Settings) -> nn.Module:
    return create_model(
        settings.model,
        weights=settings.weights,
        labels=settings.labels,
        input_spec=settings.input_spec,
    )


def _embedding_runner(
    runner: ModelRunner, detection: DetectionService
) -> Callable[[list[np.ndarray]], list[BatchOutput]] | None:
    """The batch function for micro-batches with a request of a ``seat`` key: the forward, then
    the SEAT encoder over all the batch's clips in one pass (None when the encoder is not
    loaded: the detector is unavailable and no key can use it)."""
    seat = detection.detectors.get("seat")
    if not isinstance(seat, SeatDetector) or seat.model is None:
        return None
    return functools.partial(runner, embed=seat.model.embed)


def create_app(
    settings: Settings, *, redis: Redis | None = None, model: nn.Module | None = None
) -> FastAPI:
    """The victim app. ``redis`` and ``model`` may be injected (tests); otherwise the lifespan
    connects to ``settings.redis_url`` and loads ``settings.model`` from local files."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.reuse_freed_memory:
            reuse_freed_memory()  # before the model thread's first allocation
        torch.set_num_threads(serving_threads(settings.threads))
        net = model if model is not None else build_model(settings)
        runner = ModelRunner(
            net, model_config(net), resolve_device(settings.device), trace=settings.trace_model
        )
        metrics = VictimMetrics()

        def observe(clips: int, seconds: float) -> None:
            metrics.batch_clips.observe(clips)
            metrics.inference_seconds.observe(seconds)

        store = redis or connect_redis(settings.redis_url, timeout_s=settings.redis_timeout_s)
        # The request path's scripts (reserve, commit, OOD update): one round trip per loop turn.
        scripts = ScriptPipeline(store)
        binary = connect_redis(settings.redis_url, timeout_s=settings.redis_timeout_s, decode=False)
        config = runner.config
        embedding = load_embedding(
            settings.detection_calibration,
            config.input,
            packaged_weights_path(config.model_tag).with_suffix(".detection.json"),
        )
        ood = load_ood_calibration(
            settings.ood_calibration,
            packaged_weights_path(config.model_tag).with_suffix(".ood.json"),
        )
        detection = DetectionService(
            build_detectors(
                binary,
                feature_dim=runner.feature_dim,
                embedding=embedding,
                ood=ood,
                seat_weights=settings.seat_weights,
                scripts=scripts,
            ),
            metrics,
            throttle_retry_after_s=settings.throttle_retry_after_s,
        )
        batcher = MicroBatcher(
            runner,
            max_batch_clips=settings.max_batch_clips,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue_clips=settings.max_queue_clips,
            observe=observe,
            run_embedded=_embedding_runner(runner, detection),
        )
        ledger = Ledger(
            store,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            abandoned_after_s=settings.abandoned_after_s,
            reservation_ttl_s=settings.reservation_ttl_s,
            scripts=scripts,
        )
        app.state.services = Services(
            settings=settings,
            redis=store,
            keys=KeyStore(store, operation_ttl_s=settings.idempotency_ttl_s),
            ledger=ledger,
            runner=runner,
            batcher=batcher,
            metrics=metrics,
            detection=detection,
            reconciler=Reconciler(ledger),
        )
        try:
            app.state.services.default_detection()
        except DetectorUnavailable as exc:
            raise RuntimeError(
                f"default_detector {settings.default_detector!r} cannot run on "
                f"{config.model_tag}: {exc}"
            ) from None
        await _provision_keys(app.state.services)
        batcher.start()
        if settings.freeze_startup_objects:
            frozen = freeze_startup_objects()
            log.debug("%d start-up objects frozen out of the cyclic GC", frozen)
        log.info("serving %s on %s", runner.config.model_tag, runner.device)
        try:
            yield
        finally:
            if settings.freeze_startup_objects:
                gc.unfreeze()  # collectable again, e.g. an app that is started and stopped in tests
            batcher.stop()
            await app.state.services.reconciler.drain(timeout_s=settings.redis_timeout_s * 2)
            await binary.aclose()
            if redis is None:
                await store.aclose()

    app = FastAPI(
        title="VidSteal victim",
        version="0.1.0",
        summary="A budgeted, measured video classification API (the extraction target).",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    install_openapi(app)
    for router in (classify.router, client.router, admin.router, health.router):
        app.include_router(router)
    app.add_middleware(RequestMetricsMiddleware)
    return app


def freeze_startup_objects() -> int:
    """Collect start-up garbage, then move every object alive to the GC's permanent generation
    (``gc.freeze``). A full collection, triggered whenever a quarter more objects have outlived
    two collections, otherwise walks the whole heap, the model's and the libraries' objects
    included: measured 0.17-0.20 s with the embedded victim, a stall of the event loop and about
    0.5 ms of CPU a request over the first few hundred (a throwaway probe with gc.callbacks).
    Frozen objects are still freed when their reference count drops; only reference cycles
    among them wait for :func:`gc.unfreeze`. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def _provision_keys(services: Services) -> None:
    for entry in services.settings.bootstrap_keys:
        plan = KeyCreate.model_validate(entry.model_dump(exclude={"api_key"}))
        if plan.detection is None:
            plan = plan.model_copy(update={"detection": services.default_detection()})
        created = await services.keys.create(plan, api_key=entry.api_key)
        if created is not None:
            log.info("provisioned key %s (%s)", created.key_id, created.name)
            services.metrics.budget_remaining.labels(created.key_id).set(created.remaining)


class RequestMetricsMiddleware:
    """Counts requests by route template and status (pure ASGI: cheap on the hot path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            services: Services | None = getattr(scope["app"].state, "services", None)
            if services is not None:
                services.metrics.requests.labels(path, str(status)).inc()
                services.metrics.request_seconds.labels(path).observe(time.perf_counter() - started)
