"""``python -m shared.synthactions --seed S --n N --out clips.npz``: write labelled clips.

The .npz holds ``clips`` (uint8, N x T x H x W x 3), ``labels`` (int64), ``class_names`` (str)
and the generator's ``seed``/``start``; it loads with ``np.load(path, allow_pickle=False)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from shared.synthactions.dataset import DEFAULT_FRAMES, DEFAULT_SIZE, SynthActions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.synthactions", description="Write SynthActions clips to a .npz."
    )
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--n", type=int, required=True, help="number of clips")
    parser.add_argument("--out", type=Path, required=True, help="output .npz path")
    parser.add_argument("--start", type=int, default=0, help="index of the first clip")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="height and width")
    args = parser.parse_args(argv)
    if args.n < 1 or args.start < 0:
        print("error: --n must be positive and --start non-negative", file=sys.stderr)
        return 2
    try:
        data = SynthActions(seed=args.seed, frames=args.frames, height=args.size, width=args.size)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    clips, labels = data.batch(args.start, args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        clips=clips,
        labels=labels,
        class_names=np.array(data.class_names),
        seed=np.int64(args.seed),
        start=np.int64(args.start),
    )
    print(f"wrote {args.n} clips {clips.shape[1:]} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
