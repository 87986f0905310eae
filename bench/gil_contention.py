"""What the GIL costs the victim's model thread, eager and traced (inference/tracing.py).

In the server the model thread shares the GIL with the event loop, which holds it for its Python
work (HTTP, decoding, Redis) about half the time under load. This measures the embedded victim's
forward pass (preprocessed batch, one torch thread, freed memory kept as in the server) in a
thread of its own: alone, and beside a second Python thread that busy-loops ``--busy-us`` then
sleeps as long (half the time holding the GIL). Figures: the model thread's CPU and wall clock per
clip (``time.thread_time`` / ``perf_counter``), medians of ``--rounds`` alternating rounds.

Writes bench/results/gil_contention.json.  Run:
    .venv/bin/python bench/gil_contention.py [--rounds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the server

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result

from shared.memory import reuse_freed_memory
from shared.synthactions import SynthActions
from victim_server.inference.preprocess import preprocess
from victim_server.inference.tracing import Forward, eager_forward, traced_forward
from victim_server.models import create_model, model_config

BATCH = 8
PASSES = 40


def forwards() -> dict[str, Forward]:
    model = create_model("embedded").eval()
    spec = model_config(model).input
    traced = traced_forward(model, spec, with_features=True)
    if traced is None:
        raise RuntimeError("the embedded model did not trace")
    return {"eager": eager_forward(model, with_features=True), "traced": traced}


def busy_loop(stop: threading.Event, busy_s: float) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        while time.perf_counter() - began < busy_s:
            pass
        time.sleep(busy_s)


def measure(forward: Forward, x: torch.Tensor, busy_s: float) -> dict[str, float]:
    """Per clip, in a thread of its own, with (busy_s > 0) or without a GIL-holding neighbour."""
    result: dict[str, float] = {}

    def passes() -> None:
        with torch.inference_mode():
            for _ in range(3):
                forward(x)
            cpu, wall = time.thread_time(), time.perf_counter()
            for _ in range(PASSES):
                forward(x)
            clips = PASSES * x.shape[0]
            result["cpu_ms"] = 1000 * (time.thread_time() - cpu) / clips
            result["wall_ms"] = 1000 * (time.perf_counter() - wall) / clips

    stop = threading.Event()
    neighbour = threading.Thread(target=busy_loop, args=(stop, busy_s)) if busy_s else None
    if neighbour is not None:
        neighbour.start()
    model_thread = threading.Thread(target=passes)
    model_thread.start()
    model_thread.join()
    stop.set()
    if neighbour is not None:
        neighbour.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy-us", type=float, default=500.0)
    args = parser.parse_args()
    reuse_freed_memory()
    torch.set_num_threads(1)
    model = create_model("embedded").eval()
    x = preprocess(SynthActions(seed=5).batch(0, BATCH)[0], model_config(model).input)
    runs = forwards()
    conditions: dict[str, Callable[[Forward], dict[str, float]]] = {
        "alone": lambda f: measure(f, x, 0.0),
        "half_busy_neighbour": lambda f: measure(f, x, args.busy_us / 1e6),
    }
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {c: [] for c in conditions} for name in runs
    }
    for round_ in range(args.rounds):
        for name, forward in runs.items():
            for condition, run in conditions.items():
                got = run(forward)
                samples[name][condition].append(got)
                print(
                    f"round {round_ + 1} {name:6} {condition:19}: CPU {got['cpu_ms']:.3f} "
                    f"wall {got['wall_ms']:.3f} ms per clip",
                    flush=True,
                )
    medians: dict[str, Any] = {
        name: {
            condition: {k: median([s[k] for s in values]) for k in ("cpu_ms", "wall_ms")}
            for condition, values in by_condition.items()
        }
        for name, by_condition in samples.items()
    }
    path = write_result(
        "gil_contention",
        {
            "command": " ".join(sys.argv),
            "batch": BATCH,
            "passes": PASSES,
            "busy_us": args.busy_us,
            "threads": 1,
            "median": medians,
            "runs": samples,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
