"""MoViNet: our PyTorch model against the TF Model Garden reference, on converted checkpoints.

Run it with a Python that has TensorFlow and tf-models-official (never a dependency of VidSteal;
keep it in its own virtual environment)::

    python3.11 -m venv /work/tfenv
    /work/tfenv/bin/pip install "tensorflow-cpu==2.19.*" "tf-keras==2.19.*" \\
        tf-models-no-deps==2.19.0 gin-config pyyaml
    /work/tfenv/bin/python bench/movinet_equivalence.py            # all cases, ~2 min on 2 cores

For each case (A0/A1/A2 base, A0/A1/A2 stream) it builds the reference ``MovinetClassifier`` with
random weights (random kernels, BatchNorm statistics, biases and residual scales, so that no
block is the identity), saves it with ``tf.train.Checkpoint(model=...)`` (the layout of the
published checkpoints), exports the checkpoint's variables to ``.npz``, converts that in the
project's environment (``--torch-python``, default ``.venv/bin/python``) with the function that
``python -m victim_server convert-movinet`` runs, and compares logits on the same random clips:
one pass, and for stream models also frame by frame through ``forward_stream``. It also counts
the reference's trainable parameters. Results replace ``bench/results/movinet_equivalence.json``
whole, stamped with the git commit.

``--export-npz CKPT OUT.npz`` only exports a TF checkpoint (e.g. a published one) to the ``.npz``
that ``convert-movinet`` reads where TensorFlow is absent. ``--torch-side DIR`` is the half that
runs in the project's environment; it is called by the main run. ``--reuse`` keeps the reference
half of cases already in ``--work`` (same seed and clip sizes) and redoes the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "movinet_equivalence.json"
TOLERANCE = 1e-4
STREAM_TF_OPTIONS = {
    "causal": True,
    "conv_type": "2plus1d",
    "se_type": "2plus3d",
    "activation": "hard_swish",
    "gating_activation": "hard_sigmoid",
}
CASES = ("a0", "a1", "a2", "a0_stream", "a1_stream", "a2_stream")


# --------------------------------------------------------------------------------------------
# TensorFlow side
# --------------------------------------------------------------------------------------------


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def _build_reference(variant: str, *, stream: bool, num_classes: int) -> Any:
    from official.projects.movinet.modeling import movinet, movinet_model

    options = STREAM_TF_OPTIONS if stream else {}
    backbone = movinet.Movinet(model_id=variant, use_external_states=False, **options)
    return movinet_model.MovinetClassifier(backbone, num_classes=num_classes, output_states=False)


def _randomize(model: Any, rng: np.random.Generator) -> None:
    """Give every variable a value that matters: no zero residual scale, no unit statistics."""
    for variable in model.variables:
        name, shape = variable.name, tuple(variable.shape)
        if "moving_mean" in name or "beta" in name or name.endswith("bias:0"):
            value = rng.normal(0.0, 0.1, shape)
        elif "moving_variance" in name or "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 0:  # ReZero residual scale (0 at init in the reference)
            value = rng.uniform(0.3, 1.0, shape)
        else:
            fan_in = int(np.prod(shape[:-2] if "depthwise" in name else shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        variable.assign(value.astype(np.float32))


def _calibrate(model: Any, clips: np.ndarray) -> None:
    """Keep activations at the scale of a trained network: set each BatchNorm's moving mean and
    variance to the statistics of its input on ``clips`` (one training-mode pass with momentum
    0, so every layer sees inputs already normalised by the layers before it). With raw random
    statistics, deep variants compound the scale: A1 and A2 logits reached 689 and 2,318."""
    tf = _tf()
    norms = [m for m in model.submodules if hasattr(m, "moving_variance")]  # tf_keras BNs
    # Momentum 0 on every one (the backbone's norm_momentum does not reach all of them): the
    # moving statistics become this pass's batch statistics. No variable's layout changes.
    for norm in norms:
        norm.momentum = 0.0
    model(tf.constant(clips), training=True)


def export_npz(checkpoint: str, out: Path) -> int:
    """Every variable of a TF checkpoint, by checkpoint key, into an .npz; returns the count."""
    tf = _tf()
    path = Path(checkpoint)
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else checkpoint
    if prefix is None:
        raise SystemExit(f"no TF checkpoint in {checkpoint}")
    prefix = prefix[: -len(".index")] if prefix.endswith(".index") else prefix
    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in sorted(reader.get_variable_to_shape_map()) if "OBJECT_GRAPH" not in n]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **{name: reader.get_tensor(name) for name in names})
    return len(names)


def _reference_case(
    case: str,
    work: Path,
    clips: dict[str, np.ndarray],
    calibration: np.ndarray,
    seed: int,
    num_classes: int,
) -> dict[str, Any]:
    tf = _tf()
    variant, _, kind = case.partition("_")
    stream = kind == "stream"
    tf.random.set_seed(seed)
    model = _build_reference(variant, stream=stream, num_classes=num_classes)
    first = next(iter(clips.values()))
    model(tf.constant(first), training=False)  # builds the variables
    _randomize(model, np.random.default_rng(seed))
    _calibrate(model, calibration)
    started = time.perf_counter()
    logits = {k: model(tf.constant(v), training=False).numpy() for k, v in clips.items()}
    tf_seconds = time.perf_counter() - started
    prefix = tf.train.Checkpoint(model=model).save(str(work / case / "ckpt"))
    count = export_npz(prefix, work / case / "variables.npz")
    np.savez(work / case / "tf_logits.npz", **logits)
    (work / case / "calibrated").touch()  # --reuse takes only references made this way
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    return {
        "variant": variant,
        "stream": stream,
        "checkpoint_variables": count,
        "reference_parameters": trainable,
        "tf_forward_seconds": round(tf_seconds, 2),
    }


def _reused_case(case: str, work: Path) -> dict[str, Any]:
    """A case whose reference half a previous run of the same config left in ``work``."""
    variant, _, kind = case.partition("_")
    if not (work / case / "calibrated").is_file():
        raise SystemExit(f"--reuse: {work / case} predates BatchNorm calibration; rerun it")
    with np.load(work / case / "variables.npz") as archive:
        names = archive.files
        trainable = sum(  # every variable but BatchNorm statistics and bookkeeping
            int(archive[n].size) for n in names if "moving_" not in n and "save_counter" not in n
        )
    return {
        "variant": variant,
        "stream": kind == "stream",
        "checkpoint_variables": len(names),
        "reference_parameters": trainable,
        "reused_reference_run": True,
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    mine = ["victim_server/models", "bench/movinet_equivalence.py"]
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--short", *mine))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import official  # noqa: F401  (fails early when tf-models-official is missing)

    stamp = _git_commit()  # the code that runs, taken before the (long) run
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    shapes = {  # B T H W C: an even size and an odd one, which TF 'same' pads differently
        "even": (2, args.frames, args.size, args.size, 3),
        "odd": (1, args.frames - 1, args.size + 1, args.size + 3, 3),
    }
    clips = {k: rng.uniform(0.0, 1.0, s).astype(np.float32) for k, s in shapes.items()}
    # BatchNorm statistics come from other clips of the same distribution (see _calibrate).
    calibration_shape = (4, args.frames, args.size, args.size, 3)
    calibration = rng.uniform(0.0, 1.0, calibration_shape).astype(np.float32)
    if args.reuse and (work / "clips.npz").is_file():
        kept = dict(np.load(work / "clips.npz"))
        if kept.keys() != clips.keys() or any(not np.array_equal(kept[k], clips[k]) for k in kept):
            raise SystemExit(
                f"--reuse: {work}/clips.npz was made with other --seed/--frames/--size"
            )
    np.savez(work / "clips.npz", **clips)
    cases: dict[str, Any] = {}
    for case in args.cases:
        if args.reuse and (work / case / "tf_logits.npz").is_file():
            print(f"[{case}] reference: reusing {work / case}", flush=True)
            cases[case] = _reused_case(case, work)
        else:
            print(f"[{case}] reference", flush=True)
            cases[case] = _reference_case(
                case, work, clips, calibration, args.seed, args.num_classes
            )

    print("[torch] comparing", flush=True)
    compare = [args.torch_python, str(Path(__file__).resolve()), "--torch-side", str(work)]
    subprocess.run([*compare, "--cases", *args.cases], cwd=ROOT, check=True)
    ours = json.loads((work / "torch_side.json").read_text())
    for case in args.cases:
        cases[case].update(ours[case])
        cases[case]["within_tolerance"] = cases[case]["max_abs_diff"] <= TOLERANCE
    a2_counts: dict[str, Any] = {"paper_a2": 4_800_000}
    if "a2" in cases:
        built = cases["a2"]["reference_parameters"]
        a2_counts["reference_a2_600_classes"] = built
        # the same network with a 400-class head: 200 fewer outputs of the 2048-wide layer
        a2_counts["reference_a2_400_classes"] = built - 200 * (2048 + 1)
    return {
        "bench": "movinet_equivalence",
        **stamp,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "seed": args.seed,
            "clip_shapes_bthwc": shapes,
            "num_classes": args.num_classes,
            "tolerance_max_abs_logit_diff": TOLERANCE,
            "tensorflow": _version("tensorflow-cpu") or _version("tensorflow"),
            "tf_models": _version("tf-models-no-deps") or _version("tf-models-official"),
            "python": platform.python_version(),
            "stream_reference_options": STREAM_TF_OPTIONS,
            "weights": "random: He-normal kernels, BN gamma U(0.5,1.5), beta/bias N(0,0.1), "
            "residual scales U(0.3,1); BN moving mean/variance = batch statistics of "
            f"{calibration_shape[0]} other random clips {calibration_shape[1:]} (one "
            "training-mode pass, momentum 0), so activations keep unit scale",
        },
        "cases": cases,
        "a2_parameter_count": a2_counts,
        "all_within_tolerance": all(c["within_tolerance"] for c in cases.values()),
    }


# --------------------------------------------------------------------------------------------
# PyTorch side (the project's environment)
# --------------------------------------------------------------------------------------------


def torch_side(work: Path, cases: list[str]) -> None:
    import torch

    from victim_server.models import create_model
    from victim_server.models.movinet import MoViNet
    from victim_server.models.movinet_convert import convert_checkpoint

    torch.set_num_threads(1)  # a second thread only adds barrier waits on a shared CPU
    clips = dict(np.load(work / "clips.npz"))
    out: dict[str, Any] = {}
    for case in cases:
        variant, _, kind = case.partition("_")
        arch = f"movinet_{variant}_stream" if kind == "stream" else f"movinet_{variant}"
        started = time.perf_counter()  # what `python -m victim_server convert-movinet` runs
        convert_checkpoint(
            work / case / "variables.npz",
            work / case / "converted.safetensors",
            variant=variant,
            stream=kind == "stream",
        )
        convert_seconds = time.perf_counter() - started
        model = create_model(arch, weights=work / case / "converted.safetensors")
        assert isinstance(model, MoViNet)
        reference = dict(np.load(work / case / "tf_logits.npz"))
        diffs, stream_diffs, scale, agree = [], [], 0.0, True
        for key, clip in clips.items():
            x = torch.from_numpy(clip).permute(0, 4, 1, 2, 3).contiguous()  # B C T H W
            with torch.inference_mode():
                ours = model(x).numpy()
                if model.causal:
                    state = None
                    for t in range(x.shape[2]):
                        streamed, state = model.forward_stream(x[:, :, t : t + 1], state)
                    stream_diffs.append(float(np.abs(streamed.numpy() - reference[key]).max()))
            diffs.append(float(np.abs(ours - reference[key]).max()))
            scale = max(scale, float(np.abs(reference[key]).max()))
            agree = agree and bool((ours.argmax(1) == reference[key].argmax(1)).all())
        out[case] = {
            "arch": arch,
            "max_abs_diff": max(diffs),
            "max_abs_reference_logit": scale,
            "top1_agrees": agree,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "convert_seconds": round(convert_seconds, 2),
        }
        if stream_diffs:
            out[case]["frame_by_frame_max_abs_diff"] = max(stream_diffs)
        print(f"[torch] {case}: {out[case]}", flush=True)
    (work / "torch_side.json").write_text(json.dumps(out, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/movinet_equivalence")
    parser.add_argument("--torch-python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the reference half (checkpoint, TF logits) of cases already in --work",
    )
    parser.add_argument("--torch-side", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--export-npz", nargs=2, metavar=("CKPT", "OUT_NPZ"), default=None)
    args = parser.parse_args()
    if args.torch_side is not None:
        torch_side(args.torch_side, args.cases)
        return
    if args.export_npz is not None:
        count = export_npz(args.export_npz[0], Path(args.export_npz[1]))
        print(f"wrote {count} variables to {args.export_npz[1]}")
        return
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for case, row in result["cases"].items():
        print(
            f"{case:10s} max|diff| {row['max_abs_diff']:.2e} (logits up to "
            f"{row['max_abs_reference_logit']:.1f}), frame-by-frame "
            f"{row.get('frame_by_frame_max_abs_diff', float('nan')):.2e}, "
            f"params {row['parameters']:,} vs reference {row['reference_parameters']:,}"
        )
    print(f"wrote {args.out}")
    sys.exit(0 if result["all_within_tolerance"] else 1)


if __name__ == "__main__":
    main()
