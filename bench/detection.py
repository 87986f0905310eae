"""Detection vs attacks on equal terms, in one run (writes bench/results/detection.json + PNG).

For each attacker source (noise, stacked-affine, layered stacked-affine, video folder, labelled
subset, stealth) a fresh key with PRADA in "log" mode (so the stream continues) answers
``--budget`` queries sent in batches of 10 (PRADA tests every 10th query); after each batch the
bench reads W from the admin API, so the first alarm at each delta (0.85 / 0.90 / 0.95) comes
from one trajectory. A student is then trained on the queries sent before the alarm at the
default delta (0.85) and its fidelity measured on held-out SynthActions clips. Benign traffic:
5,000 SynthActions clips from unseen seeds in sessions of same-class clips (a realistic order),
and 5,000 clips decoded from a folder of mp4 videos.

Run: .venv/bin/python bench/detection.py [--budget 2000] [--benign 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result

from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from attacker.eval.fidelity import EvalSet, evaluate
from attacker.sources import ClipShape, QueryClip, build_source
from attacker.stealth import StealthShaper
from attacker.students import StudentPreprocessing, create_student
from attacker.train.loop import TrainSettings, train_student
from attacker.train.losses import build_loss
from shared.codec import NPY_CONTENT_TYPE, encode_npy
from shared.detection import NaturalnessEmbedding
from shared.schemas import OutputMode
from shared.synthactions import NUM_CLASSES, SynthActions
from shared.video import encode_mp4
from victim_server.app import create_app
from victim_server.settings import Settings
from vidsteal.processes import start_redis

DELTAS = (0.85, 0.90, 0.95)
DEFAULT_DELTA = 0.85
SHAPE = ClipShape(16, 32, 32)
BATCH = 10


def video_folder(root: Path, *, seed: int, videos: int, layered: bool) -> Path:
    """mp4 files in UCF101 layout: SynthActions (benign) or layered affine scenes (attack)."""
    if layered:
        source = iter(
            build_source(
                {"kind": "stacked_affine", "layered": 1.0}, shape=ClipShape(48, 64, 64), seed=seed
            )
        )
        for i in range(videos):
            folder = root / f"Scene{i % 8}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"v_Scene{i % 8}_g{i:03d}_c01.mp4").write_bytes(encode_mp4(next(source).clip))
        return root
    data = SynthActions(seed=seed, frames=48, height=64, width=64)
    for i in range(videos):
        name = data.class_names[data.label(i)]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"v_{name}_g{i:03d}_c01.mp4").write_bytes(encode_mp4(data.clip(i)))
    return root


def realistic_benign(seed: int) -> Iterator[QueryClip]:
    """Sessions of 1-8 clips of one class, as a user uploading related videos would send."""
    data = SynthActions(seed=seed)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {c: [] for c in range(NUM_CLASSES)}
    index = 0
    while True:
        label = int(rng.integers(NUM_CLASSES))
        for _ in range(int(rng.integers(1, 9))):
            while not by_class[label]:
                by_class[data.label(index)].append(index)
                index += 1
            i = by_class[label].pop(0)
            yield QueryClip(clip=data.clip(i), recipe={"seed": seed, "index": i}, true_label=label)


async def trajectory(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    stream: Iterator[QueryClip],
    budget: int,
    shaper: StealthShaper | None = None,
) -> dict[str, Any]:
    key = (
        await client.post(
            "/admin/keys",
            headers=admin,
            json={
                "budget": budget,
                "output": "probs",
                "detection": {"detector": "prada", "delta": DEFAULT_DELTA, "action": "log"},
            },
        )
    ).json()
    auth = {"Authorization": f"Bearer {key['api_key']}", "Content-Type": NPY_CONTENT_TYPE}
    sent: list[QueryClip] = []
    answers: list[dict[str, Any]] = []
    ws: list[tuple[int, float]] = []
    started = time.perf_counter()
    while len(sent) < budget:
        batch = list(itertools.islice(stream, BATCH))
        if not batch:
            break
        r = await client.post(
            "/v1/classify", content=encode_npy(np.stack([q.clip for q in batch])), headers=auth
        )
        r.raise_for_status()
        results = r.json()["results"]
        if shaper is not None:
            shaper.observe(batch, results)
        sent += batch
        answers += results
        status = (await client.get(f"/admin/keys/{key['key_id']}/detection", headers=admin)).json()
        if status["w"] is not None:
            ws.append((status["queries"], status["w"]))
    first = {str(d): next((q for q, w in ws if w < d), None) for d in DELTAS}
    return {
        "queries": len(sent),
        "first_alarm": first,
        "min_w": min((w for _, w in ws), default=None),
        "final_w": ws[-1][1] if ws else None,
        "w_trajectory": ws,
        "seconds": round(time.perf_counter() - started, 1),
        "_sent": sent,
        "_answers": answers,
    }


def fidelity_before(
    sent: list[QueryClip],
    answers: list[dict[str, Any]],
    limit: int,
    eval_set: EvalSet,
    workdir: Path,
    epochs: int,
) -> float | None:
    if limit < 50:
        return None  # too few answers to train anything meaningful
    manifest = TransferManifest(
        victim={},
        output="probs",
        labels=[str(i) for i in range(NUM_CLASSES)],
        clip_shape=[16, 32, 32, 3],
    )
    with TransferSetWriter(workdir, manifest) as writer:
        for q, a in zip(sent[:limit], answers[:limit], strict=True):
            writer.append(
                q.clip,
                clip_hash=f"{len(writer.manifest.victim)}",
                recipe={},
                result=a,
                true_label=q.true_label,
                paid=True,
            )
    torch.manual_seed(0)
    student = create_student(
        "tiny3d",
        num_classes=NUM_CLASSES,
        labels=manifest.labels,
        preprocessing=StudentPreprocessing(16, 32, 32, (0.45,) * 3, (0.225,) * 3),
    )
    train_student(
        student,
        TransferSet(workdir),
        build_loss("kl", OutputMode.PROBS),
        TrainSettings(epochs=epochs, lr=1.5e-3),
        show_progress=False,
    )
    return evaluate(student, eval_set).top1_agreement


async def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(2)
    results: dict[str, Any] = {
        "budget": args.budget,
        "benign_queries": args.benign,
        "deltas": list(DELTAS),
        "default_delta": DEFAULT_DELTA,
        "attacks": {},
        "benign": {},
    }
    admin_token = secrets.token_hex(16)
    admin = {"Authorization": f"Bearer {admin_token}"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp / "redis")
        app = create_app(Settings(admin_token=admin_token, redis_url=redis.url))  # type: ignore[arg-type]
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://v", timeout=120
                ) as client:
                    eval_clips, eval_labels = SynthActions(seed=424242).batch(0, 500)
                    key = (
                        await client.post(
                            "/admin/keys", headers=admin, json={"budget": 500, "output": "label"}
                        )
                    ).json()
                    eval_auth = {
                        "Authorization": f"Bearer {key['api_key']}",
                        "Content-Type": NPY_CONTENT_TYPE,
                    }
                    victim_top1 = []
                    for start in range(0, len(eval_clips), 250):
                        r = await client.post(
                            "/v1/classify",
                            headers=eval_auth,
                            content=encode_npy(eval_clips[start : start + 250]),
                        )
                        victim_top1 += [x["index"] for x in r.json()["results"]]
                    eval_set = EvalSet(eval_clips, np.array(victim_top1), eval_labels)
                    videos = video_folder(tmp / "aux_videos", seed=5, videos=120, layered=True)
                    natural = {"kind": "synthactions", "seed": 777, "labelled": True}
                    attacks: dict[str, Any] = {
                        "noise": {"kind": "noise"},
                        "stacked_affine": {"kind": "stacked_affine"},
                        "stacked_affine_layered": {"kind": "stacked_affine", "layered": 0.8},
                        "video_folder": {
                            "kind": "video_folder",
                            "root": str(videos),
                            "clips_per_video": 8,
                        },
                        "labelled_subset": natural,
                    }
                    for name, config in [*attacks.items(), ("stealth", None)]:
                        print(f"attack {name} ...", flush=True)
                        shaper = None
                        if config is None:
                            calib = np.stack(
                                [
                                    q.clip
                                    for q in itertools.islice(
                                        iter(build_source(natural, shape=SHAPE, seed=1)), 400
                                    )
                                ]
                            )
                            shaper = StealthShaper(
                                iter(build_source(attacks["stacked_affine"], shape=SHAPE, seed=0)),
                                iter(
                                    build_source({**natural, "offset": 50_000}, shape=SHAPE, seed=0)
                                ),
                                NaturalnessEmbedding.fit(calib),
                                target_w=0.95,
                            )
                            stream: Iterator[QueryClip] = iter(shaper)
                        else:
                            stream = iter(build_source(config, shape=SHAPE, seed=0))
                        run = await trajectory(client, admin, stream, args.budget, shaper)
                        sent, answers = run.pop("_sent"), run.pop("_answers")
                        alarm = run["first_alarm"][str(DEFAULT_DELTA)]
                        before = alarm if alarm is not None else len(sent)
                        run["queries_before_alarm_at_default_delta"] = before
                        run["fidelity_before_alarm"] = fidelity_before(
                            sent, answers, before, eval_set, tmp / f"t-{name}", args.epochs
                        )
                        if shaper is not None:
                            run["stealth"] = {
                                k: v for k, v in shaper.stats.to_dict().items() if k != "w_history"
                            }
                        results["attacks"][name] = run
                        print(
                            f"  first alarm {run['first_alarm']}; fidelity before alarm "
                            f"{run['fidelity_before_alarm']}",
                            flush=True,
                        )
                    benign_videos = video_folder(
                        tmp / "benign_videos", seed=8080, videos=2600, layered=False
                    )
                    for name, stream in [
                        ("synthactions_sessions", realistic_benign(31337)),
                        (
                            "video_folder",
                            (
                                QueryClip(clip=q.clip, recipe=q.recipe)
                                for q in build_source(
                                    {
                                        "kind": "video_folder",
                                        "root": str(benign_videos),
                                        "clips_per_video": 2,
                                    },
                                    shape=SHAPE,
                                    seed=0,
                                )
                            ),
                        ),
                    ]:
                        print(f"benign {name} ...", flush=True)
                        run = await trajectory(client, admin, stream, args.benign)
                        run.pop("_sent")
                        run.pop("_answers")
                        run["false_alarms"] = {
                            d: run["first_alarm"][d] is not None for d in run["first_alarm"]
                        }
                        results["benign"][name] = run
                        print(
                            f"  queries {run['queries']}, min W {run['min_w']}, "
                            f"first alarm {run['first_alarm']}",
                            flush=True,
                        )
        finally:
            redis.stop()
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for group, style in (("attacks", "-"), ("benign", ":")):
        for name, run in results[group].items():
            traj = run["w_trajectory"]
            if traj:
                ax.plot(
                    [q for q, _ in traj],
                    [w for _, w in traj],
                    style,
                    label=f"{'benign: ' if group == 'benign' else ''}{name}",
                )
    for d in DELTAS:
        ax.axhline(d, color="grey", lw=0.7, ls="--")
    ax.set_xlabel("queries")
    ax.set_ylabel("PRADA Shapiro-Wilk W")
    ax.set_ylim(0.0, 1.01)
    ax.set_title("PRADA W per query stream (dashed: delta 0.85 / 0.90 / 0.95)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--benign", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=15)
    arguments = parser.parse_args()
    out = asyncio.run(main(arguments))
    png = RESULTS / "detection.png"
    plot(out, png)
    out["plot"] = str(png.relative_to(RESULTS.parent.parent))
    path = write_result("detection", out)
    print("\n| stream | first alarm @0.85 | @0.90 | @0.95 | min W | fidelity before alarm |")
    for group in ("attacks", "benign"):
        for name, run in out[group].items():
            fa = run["first_alarm"]
            print(
                f"| {group[:-1] if group == 'attacks' else 'benign'} {name} | {fa['0.85']} | "
                f"{fa['0.9']} | {fa['0.95']} | {run['min_w']:.3f} | "
                f"{run.get('fidelity_before_alarm')} |"
            )
    print(f"wrote {path}")
