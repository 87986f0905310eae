"""``python -m vidsteal range``: run the whole range locally (see vidsteal/range.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    args = parser.parse_args()
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


if __name__ == "__main__":
    raise SystemExit(main())
