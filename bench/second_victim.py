"""A second victim that is not the embedded one, served through the bring-your-own path.

Trains ``movinet_micro`` (a MoViNet: (2+1)D inverted bottlenecks with squeeze-excitation, not the
embedded Video Swin) on SynthActions seed 4242 (the embedded victim was trained on seed 0) with
the victim's own training script, exports it as TorchScript with a JSON input spec and a labels
file, and prints the ``bench/extraction.py`` command that attacks it through
``--model torchscript``. The training record goes to ``bench/results/second_victim.json``.

    .venv/bin/python bench/second_victim.py --out runs/second-victim --minutes 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from shared.synthactions import CLASS_NAMES
from victim_server.models.train_embedded import TrainConfig, train_embedded

ARCHITECTURE = "movinet_micro"
SEED = 4242


def export_torchscript(weights: Path, out: Path) -> dict[str, Path]:
    """The trained model as a TorchScript program + input spec + labels (the BYO files)."""
    from victim_server.models import create_model, model_config

    model = create_model(f"{ARCHITECTURE}.second", weights=weights).eval()
    spec = model_config(model).input
    example = torch.zeros(1, 3, spec.frames, spec.height, spec.width)
    with torch.inference_mode():
        program = torch.jit.trace(model, example)
    paths = {
        "program": out / "victim.pt",
        "input_spec": out / "input_spec.json",
        "labels": out / "labels.txt",
    }
    program.save(str(paths["program"]))
    paths["input_spec"].write_text(
        json.dumps(
            {
                "frames": spec.frames,
                "height": spec.height,
                "width": spec.width,
                "mean": list(spec.mean),
                "std": list(spec.std),
            }
        )
    )
    paths["labels"].write_text("\n".join(CLASS_NAMES) + "\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/second-victim"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        architecture=ARCHITECTURE,
        tag="second",
        seed=SEED,
        eval_seed=SEED + 1,
        steps=args.steps,
        time_limit_s=args.minutes * 60,
        threads=args.threads,
        eval_every=250,
        eval_clips=1000,
        loader_workers=0,
    )
    record = train_embedded(config, args.out)
    weights = args.out / f"{ARCHITECTURE}.second.safetensors"
    paths = export_torchscript(weights, args.out)
    command = (
        ".venv/bin/python bench/extraction.py --attacks probs-stacked-affine "
        f"--victim-model torchscript --victim-weights {paths['program']} "
        f"--victim-input {paths['input_spec']} --victim-labels {paths['labels']} "
        "--results extraction_second_victim"
    )
    result = write_result(
        "second_victim",
        {
            "architecture": ARCHITECTURE,
            "synthactions_seed": SEED,
            "training": record,
            "files": {k: str(v) for k, v in paths.items()},
            "attack_command": command,
        },
    )
    print(json.dumps({"held_out_top1": record["held_out"]["top1"], "record": str(result)}))
    print(command)


if __name__ == "__main__":
    main()
