"""Data for bench/recipe_ablation.py: query clips from an attacker source, labelled in process
by the embedded victim (full logits kept, so every output mode can be derived offline).

    .venv/bin/python bench/recipe_data.py synth 1000 0 /tmp/lab/eval.npz      # held-out clips
    .venv/bin/python bench/recipe_data.py affine 20000 0 /tmp/lab/aff20k.npz  # query stream
    .venv/bin/python bench/recipe_data.py natural 1000 0 /tmp/lab/nat1k.npz   # grey-box clips

No HTTP, no budget: this is for comparing training recipes quickly on the same answers; the
extraction bench (bench/extraction.py) measures the real attacker end to end.
"""

import itertools
import sys
import time

import numpy as np
import torch

from attacker.sources import ClipShape, build_source
from victim_server.inference.preprocess import preprocess
from victim_server.models import create_model, model_config

torch.set_num_threads(2)
kind, n, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
shape = ClipShape(16, 32, 32)
cfg = {
    "affine": {"kind": "stacked_affine", "layered": 0.8},
    "noise": {"kind": "noise"},
    "synth": {"kind": "synthactions", "seed": 424242, "labelled": True},
    "natural": {"kind": "synthactions", "seed": 777, "labelled": True},
}[kind]
t = time.time()
src = build_source(cfg, shape=shape, seed=seed)
items = list(itertools.islice(iter(src), n))
clips = np.stack([q.clip for q in items])
true = np.array([-1 if q.true_label is None else q.true_label for q in items])
t1 = time.time()
print("gen", t1 - t, flush=True)
net = create_model("embedded").eval()
spec = model_config(net).input
logits = []
with torch.inference_mode():
    for i in range(0, n, 128):
        logits.append(net(preprocess(clips[i : i + 128], spec)).float().numpy())
logits = np.concatenate(logits)
print(
    "label",
    time.time() - t1,
    "acc",
    (logits.argmax(1) == true).mean() if (true >= 0).any() else None,
    "hist",
    np.bincount(logits.argmax(1), minlength=16),
)
np.savez(out, clips=clips, logits=logits, true=true)
