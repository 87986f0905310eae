"""``python -m attacker``: run an extraction, evaluate an exported student, rebuild a report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command("run")
def run_command(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="Attack config.")],
    victim_url: Annotated[str | None, typer.Option(help="Victim base URL.")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key paying for the queries.")] = None,
    eval_api_key: Annotated[str | None, typer.Option(help="Key for evaluation clips.")] = None,
    budget: Annotated[int | None, typer.Option(help="Queries to spend.")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis for the answer cache.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the query stream and training.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve /metrics on this port.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Extract a student from the victim within a query budget and write the report."""
    from attacker.client import AttackerError
    from attacker.config import ConfigError, load_config

    overrides = {
        "victim.url": victim_url,
        "victim.api_key": api_key,
        "victim.eval_api_key": eval_api_key,
        "budget": budget,
        "redis_url": redis_url,
        "out": str(out) if out else None,
        "seed": seed,
        "metrics_port": metrics_port,
    }
    try:
        config = load_config(config_path, overrides)
        if not config.victim.api_key:
            _fail("no API key: set victim.api_key in the config or pass --api-key")
        report = asyncio.run(_run_with_metrics(config, quiet=quiet))
    except (ConfigError, AttackerError, OSError) as exc:
        _fail(str(exc))
        return
    final = report["final"]
    typer.echo(
        json.dumps(
            {
                "report": report["paths"]["markdown"],
                "plot": report["paths"]["plot"],
                "student": report["student"]["export"],
                "paid": report["collect"]["paid"],
                "cache_hits": report["collect"]["cache_hits"],
                "queries": final["queries"],
                "top1_fidelity": round(final["top1_agreement"], 4),
                "top5_fidelity": round(final["top5_agreement"], 4),
                "accuracy": final["accuracy"],
                "wall_seconds": report["wall_seconds"],
            }
        )
    )


async def _run_with_metrics(config: Any, *, quiet: bool) -> dict[str, Any]:
    from attacker.metrics import AttackerMetrics
    from attacker.run import RunHooks, run_attack

    if config.metrics_port is None:
        return await run_attack(config, show_progress=not quiet)
    metrics = AttackerMetrics(config.name)
    metrics.serve(config.metrics_port)
    try:
        return await run_attack(config, hooks=RunHooks(**metrics.hooks()), show_progress=not quiet)
    finally:
        metrics.close()


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with report.json.")],
) -> None:
    """Rebuild report.md and the fidelity plot from a run directory's report.json."""
    from attacker.eval.report import REPORT_JSON, render_report

    if not (run_dir / REPORT_JSON).is_file():
        _fail(f"{run_dir} has no {REPORT_JSON}")
    paths = render_report(run_dir)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}))


@app.command("eval")
def eval_command(
    student: Annotated[Path, typer.Argument(help="Exported student directory or .safetensors.")],
    labelled: Annotated[
        Path | None, typer.Option(help=".npz with clips (+ labels) from shared.synthactions.")
    ] = None,
    victim_url: Annotated[str | None, typer.Option(help="Victim to compare against.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Key paying for the answers.")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis answer cache.")] = None,
    n: Annotated[int | None, typer.Option(help="Use the first N clips.")] = None,
) -> None:
    """Evaluate an exported student: accuracy on a labelled .npz, and fidelity against a victim
    when --victim-url/--api-key are given (answers cached in Redis when --redis-url is)."""
    from attacker.evaluate_cli import evaluate_exported

    if labelled is None:
        _fail("pass --labelled clips.npz (write one with `python -m shared.synthactions`)")
        return
    if (victim_url is None) != (api_key is None):
        _fail("--victim-url and --api-key go together")
    try:
        result = asyncio.run(
            evaluate_exported(
                student,
                labelled,
                victim_url=victim_url,
                api_key=api_key,
                redis_url=redis_url,
                n=n,
            )
        )
    except (OSError, ValueError) as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps(result))


@app.command("prune")
def prune_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (transfer set, eval set).")],
    rounds: Annotated[int, typer.Option(help="Pruning rounds after the dense round 0.")] = 8,
    rate: Annotated[
        float, typer.Option(help="Fraction of surviving weights pruned per round.")
    ] = 0.2,
    target_sparsity: Annotated[
        float | None,
        typer.Option(help="Sparsity of the last round; sets the rate per round (not --rate)."),
    ] = None,
    rewind: Annotated[
        str,
        typer.Option(
            help="After each pruning step: 'weights' (reset to the rewind point), 'lr' (keep the "
            "weights, restart the schedule) or 'finetune' (keep them, small constant lr)."
        ),
    ] = "weights",
    rewind_step: Annotated[
        int, typer.Option(help="Rewind to the weights after this many steps of round 0 (0: start).")
    ] = 20,
    epochs: Annotated[
        float | None,
        typer.Option(help="Passes over the transfer set per round (default: the run's recipe)."),
    ] = None,
    start: Annotated[
        str, typer.Option(help="'student' (the run's clone) or 'init' (its random init).")
    ] = "student",
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the run's).")] = None,
    seed: Annotated[int | None, typer.Option(help="Data-order seed (default: the run's).")] = None,
    teacher_weight: Annotated[
        float,
        typer.Option(help="Weight of a KD term toward the run's dense student (0: off; no query)."),
    ] = 0.0,
    threads: Annotated[int, typer.Option(help="Torch threads (0: the run's setting).")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Iterative global magnitude pruning of the run's student on its transfer set, with weight
    rewinding (lottery tickets), learning-rate rewinding or fine-tuning after each step; writes
    RUN_DIR/prune/ (prune.json, prune.md, prune.png, student/) and adds the table to the run's
    report."""
    from attacker.prune import PruneInputError, PruneSettings, prune_run

    try:
        settings = PruneSettings(
            rounds=rounds,
            rate=rate,
            target_sparsity=target_sparsity,
            rewind=rewind,  # type: ignore[arg-type]  # checked by PruneSettings
            rewind_step=rewind_step,
            epochs=epochs,
            start=start,  # type: ignore[arg-type]  # checked by PruneSettings
            lr=lr,
            seed=seed,
            teacher_weight=teacher_weight,
        )
        report = prune_run(run_dir, settings, threads=threads, show_progress=not quiet)
    except (PruneInputError, OSError, ValueError) as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps({"report": report["paths"]["markdown"], **report["summary"]}))


@app.command("transfer")
def transfer_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with an exported student.")],
    eps: Annotated[
        list[float] | None,
        typer.Option("--eps", help="L-inf radius in pixel units of 0..255 (8 = 8/255); repeat."),
    ] = None,
    steps: Annotated[int, typer.Option(help="PGD steps.")] = 10,
    step_size: Annotated[
        float | None, typer.Option(help="PGD step in pixel units (default 2.5 * eps / steps).")
    ] = None,
    perturbation: Annotated[
        list[str] | None,
        typer.Option(help="'per-frame' (one per frame) or 'shared' (one for all); repeat."),
    ] = None,
    n: Annotated[int, typer.Option(help="Starting clips (held-out SynthActions).")] = 200,
    source_seed: Annotated[
        int, typer.Option(help="SynthActions seed of the starting clips.")
    ] = 515151,
    seed: Annotated[int, typer.Option(help="Seed of the noise control and random start.")] = 0,
    random_start: Annotated[bool, typer.Option(help="Start PGD at a random point.")] = False,
    momentum: Annotated[float, typer.Option(help="MI-FGSM momentum (0: plain PGD).")] = 0.0,
    victim_url: Annotated[str | None, typer.Option(help="Victim (default: the run's).")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="VIDSTEAL_API_KEY", help="Key paying for the queries.")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Answer cache (default: the run's).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Default RUN_DIR/transfer_attack.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Craft PGD clips on the run's clone, send them to the victim (paid, cached) and report
    the transfer success rate next to a random-sign-noise control of the same L-inf norm."""
    from attacker.adversarial.command import TransferRequest, run_transfer_command
    from attacker.client import AttackerError

    try:
        request = TransferRequest.build(
            run_dir,
            eps=eps or [2.0, 4.0, 8.0],
            steps=steps,
            step_size=step_size,
            perturbations=perturbation or ["per-frame"],
            n=n,
            source_seed=source_seed,
            seed=seed,
            random_start=random_start,
            momentum=momentum,
            victim_url=victim_url,
            api_key=api_key,
            redis_url=redis_url,
            out=out,
        )
        summary = asyncio.run(run_transfer_command(request, show_progress=not quiet))
    except (AttackerError, OSError, ValueError) as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps(summary))
