"""Research: pre-train the student on free (unpaid) layered stacked-affine clips to predict the
motion parameters their own recipes hold (the attacker made the clips, so it knows them), then
distil from the victim's answers as usual with ``bench/recipe_ablation.py --init OUT.pt``:

    .venv/bin/python bench/pretext_pretrain.py --clips 20000 --steps 1500 --out /tmp/lab/pre.pt
    .venv/bin/python bench/recipe_ablation.py --data /tmp/lab/aff5k.npz --eval /tmp/lab/eval.npz \
        --threads 1 --points 1250 2500 5000 --incremental --epochs-per-point 16 --lr 6e-3 \
        --T 4 --amp --init /tmp/lab/pre.pt \
        --kw '{"frame_differences": true, "widths": [24, 48, 96, 192], "blocks": [1, 3, 3, 1]}'

One head per recipe parameter (the first sprite's path, opacity, pulse, swing, jitter, turn,
growth and direction; a whole-frame clip's profile and the directions of its zoom, rotation and
shift), cross-entropy summed over the heads that apply. The prototype of the attacker's
``train.pretext`` (attacker/train/pretext.py, the same factors from the source's own
``RecipeFactors``), kept as the script that produced ``bench/results/pretext_pretrain.log``.
"""

import argparse
import itertools
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from attacker.sources import ClipShape, build_source
from attacker.students import StudentPreprocessing, create_student, student_preprocess

parser = argparse.ArgumentParser()
parser.add_argument("--clips", type=int, default=20000)
parser.add_argument("--steps", type=int, default=1500)
parser.add_argument("--out", required=True)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
n_clips, steps, out = args.clips, args.steps, args.out
torch.set_num_threads(args.threads)
torch.manual_seed(0)
rng = np.random.default_rng(0)

# one classification head per recipe parameter: name -> classes
HEADS = {
    "layered": 2,
    "path": 4,
    "opacity": 3,
    "pulse": 2,
    "swing": 2,
    "jitter": 2,
    "turn": 3,
    "grow": 2,
    "vx": 2,
    "vy": 2,
    "profile": 2,
    "zoom": 2,
    "rot": 2,
    "sx": 2,
    "sy": 2,
}


def labels_of(recipe):
    y = dict.fromkeys(HEADS, -1)
    if "layered" in recipe:
        y["layered"] = 1
        s = recipe["layered"]["sprites"][0]
        y["path"] = ["line", "pingpong", "circle", "still"].index(s["path"])
        y["opacity"] = ["steady", "blink", "fade"].index(s["opacity"])
        y["pulse"] = int(s.get("pulse") is not None)
        y["swing"] = int(s.get("swing") is not None)
        y["jitter"] = int(s["jitter"] > 0)
        y["turn"] = 0 if s["turn"] == 0 else (1 if s["turn"] > 0 else 2)
        y["grow"] = int(s["radius"][1] > s["radius"][0])
        if s["path"] in ("line", "pingpong"):
            y["vx"] = int(s["velocity"][0] > 0)
            y["vy"] = int(s["velocity"][1] > 0)
    else:
        m = recipe["motion"]
        y["layered"] = 0
        y["profile"] = int(m["profile"] == "pingpong")
        y["zoom"] = int(m["zoom1"] > m["zoom0"])
        y["rot"] = int(m["angle1_deg"] > m["angle0_deg"])
        y["sx"] = int(m["shift1"][0] > m["shift0"][0])
        y["sy"] = int(m["shift1"][1] > m["shift0"][1])
    return [y[k] for k in HEADS]


t0 = time.time()
src = build_source({"kind": "stacked_affine", "layered": 0.8}, shape=ClipShape(16, 32, 32), seed=97)
items = list(itertools.islice(iter(src), n_clips))
clips = np.stack([q.clip for q in items])
Y = torch.tensor([labels_of(q.recipe) for q in items])
print("gen", round(time.time() - t0), "s", flush=True)

kw = {"frame_differences": True, "widths": [24, 48, 96, 192], "blocks": [1, 3, 3, 1]}
prep = StudentPreprocessing(16, 32, 32, mean=(0.45,) * 3, std=(0.225,) * 3)
student = create_student("tiny3d", num_classes=16, preprocessing=prep, **kw)
with torch.no_grad():
    feat_dim = student.forward_features(student_preprocess(clips[:2], prep)).shape[1]
heads = torch.nn.Linear(feat_dim, sum(HEADS.values()))
params = list(student.parameters()) + list(heads.parameters())
decay = [q for q in params if q.ndim > 1]
no = [q for q in params if q.ndim <= 1]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.05}, {"params": no, "weight_decay": 0.0}], lr=6e-3
)
warm = 50
sched = torch.optim.lr_scheduler.LambdaLR(
    opt,
    lambda s: (
        (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm)))
    ),
)
bounds = np.cumsum([0, *HEADS.values()])
student.train()
for step in range(steps):
    idx = rng.choice(n_clips, 64, replace=False)
    x = student_preprocess(clips[idx], prep)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_all = heads(student.forward_features(x)).float()
    y = Y[idx]
    loss = sum(
        F.cross_entropy(out_all[:, bounds[h] : bounds[h + 1]], y[:, h], ignore_index=-1)
        for h in range(len(HEADS))
        if (y[:, h] >= 0).any()
    )
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    if step % 100 == 0 or step == steps - 1:
        with torch.no_grad():
            acc = {
                k: round(
                    float(
                        (out_all[:, bounds[h] : bounds[h + 1]].argmax(1) == y[:, h])[y[:, h] >= 0]
                        .float()
                        .mean()
                    ),
                    2,
                )
                for h, k in enumerate(HEADS)
                if (y[:, h] >= 0).any()
            }
        print(
            step,
            round(float(loss.detach()), 3),
            json.dumps(acc),
            round(time.time() - t0),
            flush=True,
        )
torch.save(student.state_dict(), out)
print("saved", out)
