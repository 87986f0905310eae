"""``python -m victim_server``: train the embedded victim, evaluate a model, serve the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from victim_server.models.embedded import EMBEDDED_ALIAS, EMBEDDED_DIR

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command("train-embedded")
def train_embedded_command(
    out: Annotated[Path, typer.Option(help="Directory for weights and training record.")] = (
        EMBEDDED_DIR
    ),
    architecture: Annotated[str, typer.Option(help="Registry architecture to train.")] = (
        "swin3d_micro"
    ),
    seed: Annotated[int, typer.Option(help="SynthActions seed of the training stream.")] = 0,
    steps: Annotated[int, typer.Option(help="Optimiser steps (64 fresh clips each).")] = 3200,
    minutes: Annotated[float, typer.Option(help="Wall-clock limit; the schedule fits it.")] = 27,
    threads: Annotated[int, typer.Option(help="Torch threads (0: all cores).")] = 0,
) -> None:
    """Train the embedded victim on SynthActions and write safetensors + training record."""
    from victim_server.models.train_embedded import TrainConfig, train_embedded

    config = TrainConfig(
        architecture=architecture,
        seed=seed,
        steps=steps,
        time_limit_s=minutes * 60,
        threads=threads,
    )
    record = train_embedded(config, out)
    typer.echo(json.dumps({k: record[k] for k in ("model", "train_seconds", "held_out")}))


@app.command("evaluate")
def evaluate_command(
    model: Annotated[str, typer.Option(help="Registry name, 'arch.tag' or 'embedded'.")] = (
        EMBEDDED_ALIAS
    ),
    weights: Annotated[Path | None, typer.Option(help="Local weights file.")] = None,
    seed: Annotated[int, typer.Option(help="SynthActions seed of the fresh clips.")] = 12345,
    n: Annotated[int, typer.Option(min=1, help="Number of clips.")] = 1000,
    threads: Annotated[int, typer.Option(help="Torch threads (0: all cores).")] = 0,
) -> None:
    """Print JSON with the model's top-1 accuracy on N fresh SynthActions clips of seed S."""
    import time

    import torch

    from shared.synthactions import SynthActions
    from victim_server.models import WeightsError, create_model, model_config
    from victim_server.models.train_embedded import evaluate_accuracy

    if threads:
        torch.set_num_threads(threads)
    try:
        net = create_model(model, weights=weights)
    except (WeightsError, KeyError) as exc:
        _fail(str(exc.args[0] if exc.args else exc))
        return
    config = model_config(net)
    spec = config.input
    data = SynthActions(seed=seed, frames=spec.frames, height=spec.height, width=spec.width)
    started = time.perf_counter()
    accuracy = evaluate_accuracy(net, data, count=n)
    seconds = time.perf_counter() - started
    typer.echo(
        json.dumps(
            {
                "model": config.model_tag,
                "seed": seed,
                "n": n,
                "top1": round(accuracy, 4),
                "clip_shape": list(spec.clip_shape),
                "seconds": round(seconds, 2),
                "ms_per_clip": round(1000 * seconds / n, 3),
            }
        )
    )


@app.command("calibrate-detectors")
def calibrate_detectors_command(
    model: Annotated[str, typer.Option(help="Registry name, 'arch.tag' or 'embedded'.")] = (
        EMBEDDED_ALIAS
    ),
    weights: Annotated[Path | None, typer.Option(help="Local weights file.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Calibration JSON (default: <weights>.ood.json beside the weights)."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="SynthActions seed of the benign clips (never an eval seed).")
    ] = 9001,
    n: Annotated[int, typer.Option(min=100, help="Number of benign clips.")] = 4000,
    score: Annotated[str, typer.Option(help="Per-clip score: energy or msp.")] = "energy",
    codec_fraction: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of the clips sent through an H.264 round trip first."
        ),
    ] = 0.5,
    window_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of the clips cut as windows of 2-3x longer actions (clients cut clips "
            "from longer videos).",
        ),
    ] = 0.5,
    threads: Annotated[int, typer.Option(help="Torch threads (0: all cores).")] = 0,
) -> None:
    """Calibrate the OOD monitor (detector 'ood') on the victim's scores for benign clips."""
    import torch

    from victim_server.detection.calibration import calibrate_ood
    from victim_server.inference.runner import ModelRunner
    from victim_server.models import WeightsError, create_model, model_config
    from victim_server.models.embedded import packaged_weights_path

    if score not in ("energy", "msp"):
        _fail(f"--score must be energy or msp, not {score!r}")
    if threads:
        torch.set_num_threads(threads)
    try:
        net = create_model(model, weights=weights)
    except (WeightsError, KeyError) as exc:
        _fail(str(exc.args[0] if exc.args else exc))
        return
    runner = ModelRunner(net, model_config(net), torch.device("cpu"))
    calibration = calibrate_ood(
        runner,
        seed=seed,
        clips=n,
        score=score,  # type: ignore[arg-type]
        codec_fraction=codec_fraction,
        window_fraction=window_fraction,
    )
    target = out or (weights or packaged_weights_path(runner.config.model_tag)).with_suffix(
        ".ood.json"
    )
    target.write_text(calibration.to_json())
    typer.echo(json.dumps({"wrote": str(target), "threshold": calibration.threshold}))


@app.command("train-detector")
def train_detector_command(
    out: Annotated[
        Path | None,
        typer.Option(help="Weights file (.safetensors; the record goes beside it as .json)."),
    ] = None,
    steps: Annotated[
        int, typer.Option(min=1, help="Optimiser steps (64 clips, two views each).")
    ] = 300,
    seed: Annotated[
        int, typer.Option(help="SynthActions seed of the training clips (never an eval seed).")
    ] = 6150,
    calibration_clips: Annotated[
        int, typer.Option(min=200, help="Benign clips of the calibration seed (6151).")
    ] = 3000,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
    calibrate_only: Annotated[
        bool, typer.Option(help="Keep the weights at --out; only calibrate them again.")
    ] = False,
) -> None:
    """Train the SEAT similarity encoder (detector 'seat') on benign SynthActions, contrastively,
    and calibrate its near-pair threshold on an unseen seed. Then run build-seat-patterns: the
    attack-pattern bank is tied to these weights, and it refits the CUSUM on both halves."""
    import torch

    from victim_server.detection.base import DetectorUnavailable
    from victim_server.detection.seat_encoder import SEAT_WEIGHTS
    from victim_server.detection.seat_train import (
        SeatTrainConfig,
        recalibrate,
        train_and_calibrate,
    )

    if seed in (6151, 8080, 31337, 9001):
        _fail(f"seed {seed} is a calibration or benchmark seed; train on another")
    target = out or SEAT_WEIGHTS
    if target.suffix != ".safetensors":
        _fail(f"--out must end in .safetensors, not {target.name!r}")
    torch.set_num_threads(threads)
    if calibrate_only:
        try:
            record = recalibrate(target, calibration_clips=calibration_clips)
        except DetectorUnavailable as exc:
            _fail(str(exc))
            return
    else:
        config = SeatTrainConfig(seed=seed, steps=steps, threads=threads)
        record = train_and_calibrate(config, target, calibration_clips=calibration_clips)
    calibration = record["calibration"]
    typer.echo(
        json.dumps(
            {
                "wrote": str(target),
                "bytes": target.stat().st_size,
                "train_seconds": record["train"]["seconds"],
                "threshold": round(calibration["threshold"], 4),
                "augmented_copies_within": calibration["source"]["augmented_copies_within"],
                "other_clips_within": calibration["source"]["other_clips_within"],
            }
        )
    )


@app.command("build-seat-patterns")
def build_seat_patterns_command(
    weights: Annotated[
        Path | None, typer.Option(help="SEAT encoder weights (default: the committed ones).")
    ] = None,
    per_family: Annotated[int, typer.Option(min=3, help="Patterns per attack family.")] = 80,
    references: Annotated[int, typer.Option(min=3, help="Benign reference clips.")] = 400,
    calibration_clips: Annotated[
        int, typer.Option(min=200, help="Benign clips of the pattern calibration seed (6152).")
    ] = 3000,
    evaluation_clips: Annotated[
        int, typer.Option(min=1, help="Fresh clips per family for the recorded evaluation.")
    ] = 128,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 1,
) -> None:
    """Build SEAT's bank of known attack patterns (generic query families embedded with the
    encoder, beside benign references), calibrate its threshold on an unseen benign seed, and
    refit the detector's CUSUM on the combined flag rate (written into the encoder's .json)."""
    import torch

    from victim_server.detection.base import DetectorUnavailable
    from victim_server.detection.seat_encoder import SEAT_WEIGHTS
    from victim_server.detection.seat_patterns import patterns_path
    from victim_server.detection.seat_patterns_build import PatternBuildConfig, build_patterns

    target = weights or SEAT_WEIGHTS
    torch.set_num_threads(threads)
    config = PatternBuildConfig(
        per_family=per_family,
        references=references,
        calibration_clips=calibration_clips,
        evaluation_clips=evaluation_clips,
    )
    try:
        bank, calibration = build_patterns(config, weights=target)
    except (DetectorUnavailable, ValueError) as exc:
        _fail(str(exc))
        return
    typer.echo(
        json.dumps(
            {
                "wrote": str(patterns_path(target)),
                "patterns": len(bank.patterns),
                "references": len(bank.references),
                "threshold": round(bank.threshold, 4),
                "benign_rate": round(calibration.benign_rate, 4),
                "attack_rate": calibration.attack_rate,
                "evaluation": bank.record["evaluation"],
            }
        )
    )


@app.command("convert-movinet")
def convert_movinet_command(
    src: Annotated[Path, typer.Argument(help="TF checkpoint (prefix, dir) or .npz export.")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    model: Annotated[str, typer.Option(help="Architecture: a0, a1 or a2.")],
    stream: Annotated[bool, typer.Option(help="The checkpoint is a stream (causal) model.")] = (
        False
    ),
) -> None:
    """Convert a TF Model Garden MoViNet checkpoint to safetensors for `serve --weights`."""
    from victim_server.models import model_config
    from victim_server.models.movinet_convert import ConversionError, convert_checkpoint

    try:
        net = convert_checkpoint(src, dst, variant=model, stream=stream)
    except ConversionError as exc:
        _fail(str(exc))
        return
    config = model_config(net)
    params = sum(p.numel() for p in net.parameters())
    typer.echo(
        json.dumps(
            {
                "model": config.architecture,
                "classes": config.num_classes,
                "parameters": params,
                "weights": str(dst),
            }
        )
    )


@app.command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="Bind address [VIDSTEAL_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [VIDSTEAL_PORT].")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL [VIDSTEAL_REDIS_URL].")] = None,
    model: Annotated[str | None, typer.Option(help="Model name [VIDSTEAL_MODEL].")] = None,
    weights: Annotated[Path | None, typer.Option(help="Weights file [VIDSTEAL_WEIGHTS].")] = None,
    labels: Annotated[Path | None, typer.Option(help="Labels file [VIDSTEAL_LABELS].")] = None,
    input_spec: Annotated[
        str | None, typer.Option(help="BYO model input: 'TxHxW' or JSON [VIDSTEAL_INPUT_SPEC].")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda [VIDSTEAL_DEVICE].")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads [VIDSTEAL_THREADS].")] = None,
    max_batch_clips: Annotated[
        int | None, typer.Option(help="Micro-batch size [VIDSTEAL_MAX_BATCH_CLIPS].")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(help="Micro-batch wait [VIDSTEAL_MAX_WAIT_MS].")
    ] = None,
    max_queue_clips: Annotated[
        int | None, typer.Option(help="Queue bound [VIDSTEAL_MAX_QUEUE_CLIPS].")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, envvar="VIDSTEAL_WORKERS", help="uvicorn worker processes.")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the victim API. VIDSTEAL_ADMIN_TOKEN must be set to a non-default secret."""
    import os
    import tempfile

    import uvicorn
    from pydantic import ValidationError

    from victim_server.settings import Settings

    flags = {
        "HOST": host,
        "PORT": port,
        "REDIS_URL": redis_url,
        "MODEL": model,
        "WEIGHTS": weights,
        "LABELS": labels,
        "INPUT_SPEC": input_spec,
        "DEVICE": device,
        "THREADS": threads,
        "MAX_BATCH_CLIPS": max_batch_clips,
        "MAX_WAIT_MS": max_wait_ms,
        "MAX_QUEUE_CLIPS": max_queue_clips,
    }
    for name, value in flags.items():
        if value is not None:
            os.environ[f"VIDSTEAL_{name}"] = str(value)
    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        _fail(f"{where}: {first['msg']}")
        return
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several processes share one set of metric files, aggregated on /metrics.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vidsteal-metrics-")
    uvicorn.run(
        "victim_server.asgi:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level=log_level,
        timeout_keep_alive=settings.keep_alive_s,
    )
