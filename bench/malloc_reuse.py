"""What keeping freed memory for reuse (shared/memory.py) saves: the embedded victim's forward
pass and the deeper student's training step, with glibc's default malloc and with
``reuse_freed_memory()``, each in a fresh process, alternating, ``--rounds`` times.

A forward pass runs in a thread other than the main one, as in the victim (its model thread);
the figures are that process's user and system CPU and minor page faults per clip (forward, at
batches 8 / 32 / 64) or per step (training, batch 64), from ``getrusage``. One torch thread.

Writes bench/results/malloc_reuse.json.  Run:
    .venv/bin/python bench/malloc_reuse.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result

REPO = Path(__file__).resolve().parent.parent
MODES = ("default", "reuse")
FORWARD_BATCHES = (8, 32, 64)
TRAIN_BATCH = 64

# Runs in a fresh interpreter: ``python -c _PROBE MODE``; prints one JSON line.
_PROBE = """
import json, os, resource, sys, threading
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from shared.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
import torch
torch.set_num_threads(1)
from shared.synthactions import SynthActions
from victim_server.inference.preprocess import preprocess
from victim_server.models import create_model, model_config
from attacker.students.factory import create_student

def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt

def per(before, after, n):
    user, system, faults = (b - a for a, b in zip(before, after))
    return {"user_ms": 1000 * user / n, "system_ms": 1000 * system / n,
            "cpu_ms": 1000 * (user + system) / n, "faults": faults / n}

out = {"forward": {}}
clips = SynthActions(seed=5).batch(0, 64)[0]
victim = create_model("embedded").eval()
spec = model_config(victim).input

def forwards():
    with torch.inference_mode():
        for batch in (8, 32, 64):
            x = clips[:batch]
            for _ in range(2):
                victim(preprocess(x, spec))
            passes = max(4, 512 // batch)
            before = usage()
            for _ in range(passes):
                victim(preprocess(x, spec))
            out["forward"][str(batch)] = per(before, usage(), batch * passes)

thread = threading.Thread(target=forwards)
thread.start()
thread.join()

student = create_student("tiny3d", num_classes=10, widths=[24, 48, 96, 192], blocks=[1, 3, 3, 1])
optimiser = torch.optim.AdamW(student.parameters(), lr=1e-3)
generator = torch.Generator().manual_seed(0)
x = torch.randn(64, 3, 16, 32, 32, generator=generator)
y = torch.randint(0, 10, (64,), generator=generator)

def step():
    optimiser.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(student(x), y).backward()
    optimiser.step()

for _ in range(3):
    step()
before = usage()
for _ in range(10):
    step()
out["train_step"] = per(before, usage(), 10)
print(json.dumps(out))
"""


def probe(mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe {mode} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(pick: Any) -> dict[str, float]:
        fields = ("user_ms", "system_ms", "cpu_ms", "faults")
        return {f: median([pick(r)[f] for r in rounds]) for f in fields}

    return {
        "forward_per_clip": {
            str(b): med(lambda r, b=b: r["forward"][str(b)]) for b in FORWARD_BATCHES
        },
        "train_step": med(lambda r: r["train_step"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        for mode in MODES:
            result = probe(mode)
            runs[mode].append(result)
            forward = "  ".join(
                f"b{b} {result['forward'][str(b)]['cpu_ms']:.2f} ms "
                f"({result['forward'][str(b)]['faults']:.0f} faults)"
                for b in FORWARD_BATCHES
            )
            train = result["train_step"]
            print(
                f"round {round_ + 1} {mode:7}: forward per clip {forward}; train step "
                f"{train['cpu_ms']:.0f} ms ({train['faults']:.0f} faults)",
                flush=True,
            )
    medians = {mode: summary(runs[mode]) for mode in MODES}
    path = write_result(
        "malloc_reuse",
        {
            "command": " ".join(sys.argv),
            "threads": 1,
            "forward": {"model": "embedded", "batches": list(FORWARD_BATCHES)},
            "train": {
                "student": "tiny3d widths [24, 48, 96, 192] blocks [1, 3, 3, 1]",
                "batch": TRAIN_BATCH,
                "clip": [3, 16, 32, 32],
            },
            "median": medians,
            "runs": runs,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
