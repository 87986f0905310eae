"""``python -m vidsteal range``: run the whole range locally (see vidsteal/range.py);
``python -m vidsteal scoreboard``: every attack against every detector and defense
(see vidsteal/scoreboard)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vidsteal.range import DEFAULT_CONFIG, RangeOptions, run_range


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m vidsteal")
    commands = parser.add_subparsers(dest="command", required=True)
    range_cmd = commands.add_parser("range", help="victim + Redis + attack + report, locally")
    range_cmd.add_argument("--budget", type=int, default=5000, help="attack queries")
    range_cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="attack config")
    range_cmd.add_argument(
        "--output", default="probs", choices=["logits", "probs", "topk", "label"]
    )
    range_cmd.add_argument("--eval-clips", type=int, default=1000)
    range_cmd.add_argument("--seed", type=int, default=0)
    _add_scoreboard(commands)
    args = parser.parse_args()
    if args.command == "scoreboard":
        return _scoreboard(args)
    if args.budget < 1 or args.eval_clips < 1:
        parser.error("--budget and --eval-clips must be positive")
    return run_range(
        RangeOptions(
            budget=args.budget,
            config=args.config,
            output=args.output,
            eval_clips=args.eval_clips,
            seed=args.seed,
        )
    )


def _add_scoreboard(commands: Any) -> None:
    board = commands.add_parser(
        "scoreboard", help="every attack x detector x defense: scoreboard.md/json/png"
    )
    board.add_argument("--budget", type=int, default=5000, help="queries per attack run")
    board.add_argument("--attacks", nargs="+", metavar="ATTACK", help="rows (default: all)")
    board.add_argument("--defenses", nargs="+", metavar="DEFENSE", help="columns (with none)")
    board.add_argument("--detectors", nargs="+", metavar="DETECTOR", help="default: all offered")
    board.add_argument("--benign", type=int, default=10000, help="benign session clips")
    board.add_argument("--benign-videos", type=int, default=1000, help="benign mp4 videos")
    board.add_argument("--eval-clips", type=int, default=1000, help="held-out clips")
    board.add_argument("--seed", type=int, default=0)
    board.add_argument("--jobs", type=int, default=2, help="attack runs in parallel")
    board.add_argument("--out", type=Path, help="default: runs/scoreboard-<timestamp>")
    board.add_argument("--small", action="store_true", help="the CI-sized version (~2 min)")


def _scoreboard(args: argparse.Namespace) -> int:
    from vidsteal.scoreboard import (
        ScoreboardSpec,
        SpecError,
        default_out,
        run_scoreboard,
        write_outputs,
    )

    given: dict[str, Any] = {
        name: value
        for name, value in (
            ("attacks", args.attacks and tuple(args.attacks)),
            ("defenses", args.defenses and tuple(args.defenses)),
            ("detectors", args.detectors and tuple(args.detectors)),
        )
        if value
    }
    out = args.out or default_out()
    try:
        if args.small:
            spec = ScoreboardSpec.small_version(out, seed=args.seed, jobs=args.jobs, **given)
        else:
            spec = ScoreboardSpec(
                out=out,
                budget=args.budget,
                benign=args.benign,
                benign_videos=args.benign_videos,
                eval_clips=args.eval_clips,
                seed=args.seed,
                jobs=args.jobs,
                **given,
            )
        results = run_scoreboard(spec)
    except SpecError as exc:
        print(f"scoreboard: {exc}", file=sys.stderr)
        return 2
    paths = write_outputs(results, out)
    print(f"[scoreboard] done in {results['seconds']} s")
    for kind, path in paths.items():
        print(f"[scoreboard] {kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
