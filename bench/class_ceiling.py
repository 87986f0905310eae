"""Where an attack's last points of agreement go, from bench/extraction.py's results files.

For each attack of each file, at its last budget point: the top-1 agreement, the agreement on
every class but the named ones, and the ceiling, the agreement it would reach if every other
class were perfect and the named classes stayed as they are. A class's weight is the number of
held-out clips the victim answers with it (bench/extraction.py's evaluation set: 1,000
SynthActions clips of seed 424242), counted here by running the victim locally.

    .venv/bin/python bench/class_ceiling.py extraction_deep_balanced_5k_pretext \\
        extraction_deep_knockoff_swing --classes pulse blink
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS

from attacker.sources import ClipShape, build_source
from victim_server.inference.preprocess import preprocess
from victim_server.models.factory import create_model, model_config
from vidsteal.scoreboard.attacks import EVAL_SOURCE

EVAL_CLIPS = 1000


def victim_class_counts(model_name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """How many held-out clips the victim answers with each class, and its labels."""
    model = create_model(model_name)
    spec = model_config(model).input
    shape = ClipShape(spec.frames, spec.height, spec.width)
    source = build_source(EVAL_SOURCE, shape=shape, seed=0)
    clips = np.stack([q.clip for q in itertools.islice(iter(source), EVAL_CLIPS)])
    with torch.inference_mode():
        answers = torch.cat(
            [
                model(preprocess(clips[i : i + 250], spec)).argmax(-1)
                for i in range(0, len(clips), 250)
            ]
        )
    labels = tuple(model_config(model).labels)
    return np.bincount(answers.numpy(), minlength=len(labels)), labels


def ceiling_rows(
    results: dict[str, Any], counts: np.ndarray, named: np.ndarray
) -> list[tuple[str, int, float, float, float]]:
    """(attack, queries, agreement, agreement without the named classes, ceiling) per attack."""
    rows = []
    others = ~named
    for name, attack in results["attacks"].items():
        point = attack["points"][-1]
        agree = np.array([np.nan if a is None else a for a in point["class_agreement_mean"]])
        agree = np.nan_to_num(agree, nan=1.0)  # None: no clip of the class, so no miss
        total = float((agree * counts).sum() / counts.sum())
        without = float((agree[others] * counts[others]).sum() / counts[others].sum())
        ceiling = float(
            (counts[others].sum() + (agree[named] * counts[named]).sum()) / counts.sum()
        )
        rows.append((name, int(point["queries"]), total, without, ceiling))
    return rows


def main(args: argparse.Namespace) -> None:
    counts, labels = victim_class_counts(args.victim_model)
    unknown = sorted(set(args.classes) - set(labels))
    if unknown:
        raise SystemExit(f"unknown class(es) {unknown}; the victim's labels are {list(labels)}")
    named = np.isin(np.array(labels), args.classes)
    per_class = dict(zip(labels, counts.tolist(), strict=True))
    print(f"held-out clips per class (victim's answers): {per_class}")
    print(f"| file | attack | queries | top-1 | without {', '.join(args.classes)} | ceiling |")
    print("|---|---|---:|---:|---:|---:|")
    for stem in args.results:
        results = json.loads((RESULTS / f"{stem}.json").read_text())
        for name, queries, total, without, ceiling in ceiling_rows(results, counts, named):
            print(f"| {stem} | {name} | {queries} | {total:.3f} | {without:.3f} | {ceiling:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results file stems under bench/results")
    parser.add_argument("--classes", nargs="+", default=["pulse", "blink"])
    parser.add_argument("--victim-model", default="embedded")
    main(parser.parse_args())
