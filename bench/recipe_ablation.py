"""Training-recipe ablations on fixed answers (bench/recipe_data.py), one seed per run.

Trains a student on the first N labelled clips, continually (one student as the set grows,
``--incremental``: steps = epochs x new clips / batch) or fresh per point (``--fresh``), and
prints top-1/top-5 agreement with the victim on the held-out clips after each point. Research
code kept so that the recipe notes in the README can be re-run:

    .venv/bin/python bench/recipe_ablation.py --data /tmp/lab/aff20k.npz --eval /tmp/lab/eval.npz \
        --threads 1 --points 1250 2500 5000 --incremental --epochs-per-point 16 --lr 6e-3 --T 4 \
        --amp \
        --kw '{"frame_differences": true, "widths": [24, 48, 96, 192], "blocks": [1, 3, 3, 1]}'

Results of the runs behind the README's table: bench/results/recipe_ablation.json.
"""

import argparse
import copy
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from attacker.students import StudentPreprocessing, create_student, student_preprocess

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--eval", required=True)
p.add_argument("--arch", default="tiny3d")
p.add_argument("--kw", default="{}")
p.add_argument("--frames", type=int, default=16)
p.add_argument("--points", type=int, nargs="+", default=[1250, 2500, 5000, 10000, 20000])
p.add_argument("--mode", default="probs")  # probs | top5 | label
p.add_argument(
    "--epochs-per-point", type=float, default=10
)  # passes over the current set per point
p.add_argument("--min-steps", type=int, default=0)
p.add_argument("--bs", type=int, default=64)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--wd", type=float, default=0.05)
p.add_argument("--T", type=float, default=1.0)
p.add_argument("--aug", default="")  # shift,flipnone,bright,mixup
p.add_argument("--aug-from", type=int, default=0)  # first budget point whose steps augment
p.add_argument("--aug-pad", type=int, default=4)  # largest shift, pixels
p.add_argument("--ema", type=float, default=0.0)
p.add_argument("--fresh", action="store_true")
p.add_argument("--incremental", action="store_true")  # fresh student per point (old behaviour)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--natural", default="")  # grey box npz of labelled natural clips
p.add_argument("--nat-frac", type=float, default=0.05)
p.add_argument("--tlw", type=float, default=0.0)
p.add_argument("--tag", default="")
p.add_argument("--amp", action="store_true")
p.add_argument("--mixup", type=float, default=0.0)  # Beta(alpha, alpha) mixing of clips and targets
# extra passes over the whole set at the last point
p.add_argument("--final-epochs", type=float, default=0.0)
# draw clips with probability ~ count(victim top-1 class)^-balance among the clips so far (0: off)
p.add_argument("--balance", type=float, default=0.0)
p.add_argument("--smooth", type=float, default=0.0)  # label smoothing of the hard-label loss
# semi-supervised: unpaid clips of the same source, distilled from the EMA teacher (no query)
p.add_argument("--unlabelled", default="")
p.add_argument("--unl-weight", type=float, default=1.0)
p.add_argument("--unl-bs", type=int, default=64)
p.add_argument("--unl-noise", type=float, default=0.0)  # gaussian noise on the student's view
p.add_argument("--unl-T", type=float, default=0.0)  # teacher temperature (0: the run's T)
p.add_argument("--unl-from", type=int, default=0)  # first budget point that uses them
# start from these student weights (a state dict, e.g. pre-trained on free clips) instead of init
p.add_argument("--init", default="")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
rng = np.random.default_rng(a.seed)
d = np.load(a.data)
clips = d["clips"]
logits = torch.from_numpy(d["logits"])
true = d["true"]
N = max(a.points)
clips = clips[:N]
logits = logits[:N]
true = true[:N]
if a.natural:
    nd = np.load(a.natural)
    n_nat = round(a.nat_frac * N)
    # interleave natural clips evenly into the stream
    pos = np.linspace(0, N - 1, n_nat).astype(int)
    clips = clips.copy()
    logits = logits.clone()
    true = true.copy()
    clips[pos] = nd["clips"][:n_nat]
    logits[pos] = torch.from_numpy(nd["logits"][:n_nat])
    true[pos] = nd["true"][:n_nat]
probs = logits.softmax(1)
label = logits.argmax(1)
if a.mode == "top5":
    v, i = probs.topk(5, dim=1)
    rest = (1 - v.sum(1, keepdim=True)).clamp_min(0) / 11
    tgt = rest.expand(-1, 16).clone().scatter(1, i, v)
elif a.mode == "label":
    tgt = F.one_hot(label, 16).float()
else:
    tgt = probs
unl = np.load(a.unlabelled)["clips"] if a.unlabelled else None
ev = np.load(a.eval)
ev_clips = ev["clips"]
ev_top1 = ev["logits"].argmax(1)
ev_true = ev["true"]
kw = json.loads(a.kw)
prep = StudentPreprocessing(a.frames, 32, 32, mean=(0.45,) * 3, std=(0.225,) * 3)


def new_student():
    torch.manual_seed(a.seed)
    model = create_student(a.arch, num_classes=16, preprocessing=prep, **kw)
    if a.init:
        model.load_state_dict(torch.load(a.init, weights_only=True))
    return model


def groups(m):
    decay, no = [], []
    for _, q in m.named_parameters():
        (no if q.ndim <= 1 else decay).append(q)
    return [{"params": decay, "weight_decay": a.wd}, {"params": no, "weight_decay": 0.0}]


def augment(x):
    # x: B C T H W float normalised
    if "shift" in a.aug:
        B = x.shape[0]
        pad = a.aug_pad
        xp = F.pad(x.flatten(1, 2), (pad, pad, pad, pad), mode="replicate").view(
            B, x.shape[1], x.shape[2], x.shape[3] + 2 * pad, x.shape[4] + 2 * pad
        )
        dy, dx = rng.integers(0, 2 * pad + 1, 2)
        x = xp[..., dy : dy + x.shape[3], dx : dx + x.shape[4]]
    if "bright" in a.aug:
        B = x.shape[0]
        x = x * torch.empty(B, 1, 1, 1, 1).uniform_(0.8, 1.2) + torch.empty(B, 1, 1, 1, 1).uniform_(
            -0.3, 0.3
        )
    return x


@torch.inference_mode()
def evaluate(m):
    m.eval()
    out = []
    for i in range(0, len(ev_clips), 250):
        out.append(m(student_preprocess(ev_clips[i : i + 250], prep)))
    lg = torch.cat(out)
    t1 = lg.argmax(1).numpy()
    t5 = lg.topk(5, 1).indices.numpy()
    return (
        float((t1 == ev_top1).mean()),
        float((t5 == ev_top1[:, None]).any(1).mean()),
        float((t1 == ev_true).mean()),
    )


def loss_fn(out, tb, yb, trueb):
    T = a.T
    if a.mode == "label":
        loss_value = F.cross_entropy(out, yb, label_smoothing=a.smooth)
    else:
        loss_value = (
            F.kl_div(
                F.log_softmax(out / T, 1),
                (tb.clamp_min(1e-12).log() / T).softmax(1),
                reduction="batchmean",
            )
            * T
            * T
        )
    if a.tlw > 0:
        known = trueb >= 0
        if known.any():
            ce = F.cross_entropy(out, trueb.clamp_min(0), reduction="none")
            loss_value = loss_value + a.tlw * (ce * known.float()).sum() / len(trueb)
    return loss_value


student = new_student()
ema = None
ema_step = 0
res = []
t0 = time.time()
total_steps = 0
prev = 0
for point in a.points:
    if a.fresh:
        student = new_student()
        ema = None
    n = point
    steps = max(
        a.min_steps,
        math.ceil(a.epochs_per_point * ((n - prev) if a.incremental and not a.fresh else n) / a.bs),
    )
    if point == a.points[-1]:
        steps += math.ceil(a.final_epochs * n / a.bs)
    prev = n
    draw = None
    if a.balance > 0:
        counts = np.bincount(label[:n].numpy(), minlength=16).astype(float)
        draw = counts[label[:n].numpy()] ** -a.balance
        draw /= draw.sum()
    opt = torch.optim.AdamW(groups(student), lr=a.lr)
    if a.ema and ema is None:
        ema = copy.deepcopy(student)
    warm = min(100, steps // 10)
    student.train()
    for s in range(steps):
        lr = a.lr * (
            (s + 1) / warm
            if s < warm
            else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.choice(n, a.bs, p=draw) if draw is not None else rng.integers(0, n, a.bs)
        x = student_preprocess(clips[idx], prep)
        if point >= a.aug_from:
            x = augment(x)
        tb, yb = tgt[idx], label[idx]
        if a.mixup > 0:
            lam = float(rng.beta(a.mixup, a.mixup))
            perm = torch.randperm(len(idx))
            x = lam * x + (1 - lam) * x[perm]
            tb = lam * tb + (1 - lam) * tb[perm]
        if unl is not None and ema is not None and point >= a.unl_from:
            xu = student_preprocess(unl[rng.integers(0, len(unl), a.unl_bs)], prep)
            ema.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.amp):
                tu = (ema(xu).float() / (a.unl_T or a.T)).softmax(1)
            if a.unl_noise > 0:
                xu = xu + a.unl_noise * torch.randn_like(xu)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.amp):
                both = student(torch.cat([x, xu])).float()
            out, out_u = both[: len(x)], both[len(x) :]
            loss = loss_fn(out, tb, yb, torch.from_numpy(true[idx]))
            loss = loss + a.unl_weight * a.T * a.T * F.kl_div(
                F.log_softmax(out_u / a.T, 1), tu, reduction="batchmean"
            )
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.amp):
                out = student(x).float()
            loss = loss_fn(out, tb, yb, torch.from_numpy(true[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 2.0)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                ema_step += 1
                decay = min(a.ema, (1 + ema_step) / (10 + ema_step))
                for pe, ps in zip(ema.parameters(), student.parameters(), strict=True):
                    pe.lerp_(ps, 1 - decay)
                for be, bs_ in zip(ema.buffers(), student.buffers(), strict=True):
                    be.copy_(bs_)
    total_steps += steps
    f = evaluate(student)
    fe = evaluate(ema) if ema is not None else None
    student.train()
    r = {
        "queries": n,
        "steps": steps,
        "top1": f[0],
        "top5": f[1],
        "acc": f[2],
        "ema_top1": fe[0] if fe else None,
        "sec": round(time.time() - t0),
    }
    res.append(r)
    print(json.dumps(r), flush=True)
print("RESULT", a.tag, json.dumps(vars(a)), json.dumps(res), flush=True)
