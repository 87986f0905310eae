"""Data-parallel student training: epoch sharding, DDP in process, and torchrun with 2 CPU ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import yaml

from attacker.data import TransferManifest, TransferSet, TransferSetWriter
from attacker.data import transfer_set as transfer_set_module
from attacker.data.dataset import TransferDataset, shard_indices
from attacker.students import StudentPreprocessing, create_student, load_exported_student
from attacker.train.distributed import DistributedContext, state_checksum
from attacker.train.loop import TrainSettings, train_student
from attacker.train.losses import build_loss
from shared.schemas import OutputMode
from shared.synthactions import SynthActions

REPO = Path(__file__).resolve().parents[2]
CLASSES = 4
SHAPE = (8, 16, 16)
WIDTHS = [4, 8, 8, 8]
TORCHRUN_TIMEOUT_S = 150


def _write_transfer(root: Path, n: int) -> TransferSet:
    """As in test_training: a teacher answering with the SynthActions label (first 4 classes)."""
    data = SynthActions(seed=5, frames=SHAPE[0], height=SHAPE[1], width=SHAPE[2])
    manifest = TransferManifest(
        victim={},
        output=OutputMode.PROBS.value,
        labels=[f"c{i}" for i in range(CLASSES)],
        clip_shape=[*SHAPE, 3],
    )
    with TransferSetWriter(root, manifest) as writer:
        i = 0
        while writer.manifest.count < n:
            label = data.label(i)
            if label < CLASSES:
                probs = np.full(CLASSES, 0.1 / (CLASSES - 1))
                probs[label] = 0.9
                writer.append(
                    data.clip(i),
                    clip_hash=f"{i:x}",
                    recipe={"i": i},
                    result={"index": label, "label": f"c{label}", "probs": probs.tolist()},
                    true_label=label,
                    paid=True,
                )
            i += 1
    return TransferSet(root)


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of 8 clips, so epochs also shuffle the shard order."""
    monkeypatch.setattr(transfer_set_module, "SHARD_CLIPS", 8)


# -- the sharding function -----------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("count", [0, 1, 2, 7, 10, 11])
def test_shards_are_equal_disjoint_and_cover_every_position(count: int, world_size: int) -> None:
    shards = [shard_indices(count, rank=r, world_size=world_size) for r in range(world_size)]
    per_rank = -(-count // world_size)
    assert all(len(s) == per_rank for s in shards)  # equal batch counts on every rank
    # Interleaving the ranks' positions gives the sequence, then the padding from its start.
    interleaved = [shards[r][j] for j in range(per_rank) for r in range(world_size)]
    padding = per_rank * world_size - count
    assert interleaved[:count] == list(range(count))
    assert interleaved[count:] == ([i % count for i in range(padding)] if count else [])
    assert padding < world_size
    if count % world_size == 0:  # no padding: strictly disjoint
        assert sorted(i for s in shards for i in s) == list(range(count))


def test_one_rank_is_the_identity() -> None:
    assert shard_indices(5, rank=0, world_size=1) == [0, 1, 2, 3, 4]
    for rank, world_size in [(1, 1), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError):
            shard_indices(5, rank=rank, world_size=world_size)


def _legacy_order(transfer: TransferSet, limit: int, seed: int, epoch: int) -> list[int]:
    """The order TransferDataset produced before sharding existed (record indices)."""
    rng = np.random.default_rng([seed, epoch])
    groups = transfer.records_by_shard(limit)
    shards = list(groups)
    rng.shuffle(shards)
    order = []
    for shard in shards:
        records = list(groups[shard])
        order += [records[int(i)].index for i in rng.permutation(len(records))]
    return order


def test_dataset_shards_each_epoch_across_ranks(small_shards: None, tmp_path: Path) -> None:
    transfer = _write_transfer(tmp_path, n=30)
    assert transfer.shards == 4
    limit = 29  # uneven for 2 and 3 ranks
    clips = {record.index: clip for record, clip in transfer.iter_clips()}
    for epoch in range(2):
        single = TransferDataset(transfer, limit=limit, seed=3)
        single.set_epoch(epoch)
        order = [r.index for r in single.epoch_records()]
        assert order == _legacy_order(transfer, limit, seed=3, epoch=epoch)  # unchanged
        for world_size in (1, 2, 3):
            seen: list[list[int]] = []
            for rank in range(world_size):
                ds = TransferDataset(
                    transfer, limit=limit, seed=3, rank=rank, world_size=world_size
                )
                ds.set_epoch(epoch)
                records = ds.epoch_records()
                samples = list(ds)
                assert len(samples) == len(records) == len(ds) == -(-limit // world_size)
                for record, sample in zip(records, samples, strict=True):
                    np.testing.assert_array_equal(sample.clip, clips[record.index])
                    assert sample.result == record.result
                seen.append([r.index for r in records])
            everything = [i for rank_seen in seen for i in rank_seen]
            assert set(everything) == set(range(limit))  # every sample once per epoch...
            assert len(everything) == -(-limit // world_size) * world_size  # ...+ padding
            assert [seen[j % world_size][j // world_size] for j in range(limit)] == order
    first, second = TransferDataset(transfer, seed=3), TransferDataset(transfer, seed=3)
    second.set_epoch(1)
    assert [r.index for r in first.epoch_records()] != [r.index for r in second.epoch_records()]


# -- DDP in process ------------------------------------------------------------------------


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_student(
        "tiny3d",
        num_classes=CLASSES,
        preprocessing=StudentPreprocessing(*SHAPE),
        labels=[f"c{i}" for i in range(CLASSES)],
        widths=WIDTHS,
    )


@pytest.fixture
def one_rank_group() -> Iterator[DistributedContext]:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield DistributedContext(
            rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo"
        )
    finally:
        dist.destroy_process_group()


def test_ddp_on_one_rank_trains_exactly_like_one_process(
    one_rank_group: DistributedContext, tmp_path: Path
) -> None:
    transfer = _write_transfer(tmp_path / "t", n=20)
    settings = TrainSettings(epochs=2, batch_size=8, warmup_steps=1)
    loss = build_loss("kl", OutputMode.PROBS)
    plain, ddp = _student(), _student()
    before = state_checksum(plain)
    a = train_student(plain, transfer, loss, settings, show_progress=False, distributed=None)
    b = train_student(
        ddp,
        transfer,
        loss,
        settings,
        checkpoint=tmp_path / "ckpt.pt",
        show_progress=False,
        distributed=one_rank_group,
    )
    assert a.steps == b.steps == 6
    assert a.history == b.history
    assert state_checksum(plain) == state_checksum(ddp) != before
    assert type(ddp.backbone).__name__ == type(plain.backbone).__name__  # unwrapped in place
    assert not ddp.training
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["epoch"] == 2


# -- torchrun, 2 CPU processes -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_dir(root: Path, n: int) -> Path:
    _write_transfer(root / "transfer", n=n)
    config = {
        "name": "ddp-test",
        "victim": {"url": "http://127.0.0.1:9", "api_key": "***"},  # redacted, as written
        "budget": n,
        "seed": 7,
        "out": str(root),
        "query": {"source": {"kind": "noise"}},
        "student": {"architecture": "tiny3d", "kwargs": {"widths": WIDTHS}},
        "train": {"loss": "kl", "epochs": 5, "batch_size": 8, "warmup_steps": 1},
    }
    (root / "config.resolved.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _env() -> dict[str, str]:
    """CPU only (gloo), one thread per process, no torchrun variables inherited."""
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-20000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # one JSON line, from the main rank only
    summary: dict[str, Any] = json.loads(lines[0])
    return summary


@pytest.fixture(scope="module")
def torchrun_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    run_dir = _run_dir(tmp_path_factory.mktemp("ddp-run"), n=32)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "attacker.train.ddp",
        str(run_dir),
        "--epochs",
        "2",
        "--limit",
        "30",
        "--checkpoint",
        str(run_dir / "checkpoints" / "ddp.pt"),
        "--no-progress",
        "--audit",
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TORCHRUN_TIMEOUT_S,
        check=False,
    )
    return run_dir, _summary(proc)


def test_torchrun_trains_and_exports_a_loadable_student(
    torchrun_result: tuple[Path, dict[str, Any]],
) -> None:
    run_dir, summary = torchrun_result
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["epochs"] == 2 and summary["queries"] == 30
    assert summary["steps"] == 2 * 4  # ceil(30 / 8) per epoch, as in one process
    assert np.isfinite(summary["final_loss"])
    assert Path(summary["export"]) == run_dir / "student-ddp"
    student = load_exported_student(run_dir / "student-ddp")
    assert student.num_classes == CLASSES
    state = torch.load(run_dir / "checkpoints" / "ddp.pt", weights_only=True)
    assert state["epoch"] == 2


def test_torchrun_ranks_train_on_disjoint_shards_of_the_epoch(
    torchrun_result: tuple[Path, dict[str, Any]],
) -> None:
    _, summary = torchrun_result
    rank0, rank1 = summary["epoch0_records"]
    assert len(rank0) == len(rank1) == 15
    assert not set(rank0) & set(rank1)
    assert set(rank0) | set(rank1) == set(range(30))


def test_torchrun_keeps_the_replicas_identical(
    torchrun_result: tuple[Path, dict[str, Any]],
) -> None:
    run_dir, summary = torchrun_result
    assert summary["replicas_identical"] is True
    rank0, rank1 = summary["checksums"]
    assert rank0 == rank1 == state_checksum(load_exported_student(run_dir / "student-ddp"))


def test_the_command_runs_as_one_process_without_torchrun(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path, n=12)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attacker.train.ddp",
            str(run_dir),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "single"),
            "--no-progress",
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TORCHRUN_TIMEOUT_S,
        check=False,
    )
    summary = _summary(proc)
    assert summary["world_size"] == 1 and summary["backend"] == "none"
    assert summary["steps"] == 2 and summary["epochs"] == 1
    assert summary["checksums"] == [state_checksum(load_exported_student(tmp_path / "single"))]


def test_retraining_a_pretext_run_starts_from_its_cached_pretraining(tmp_path: Path) -> None:
    from attacker.train.ddp import train_from_run

    run_dir = _run_dir(tmp_path, n=12)
    config = yaml.safe_load((run_dir / "config.resolved.yaml").read_text(encoding="utf-8"))
    config["query"]["source"] = {"kind": "stacked_affine"}
    config["train"]["pretext"] = {"steps": 2, "clips": 16, "batch_size": 4}
    (run_dir / "config.resolved.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def retrain() -> Path:
        train_from_run(
            run_dir, distributed=None, epochs=1, out=tmp_path / "ddp", show_progress=False
        )
        (cached,) = (run_dir / "checkpoints").glob("pretext-*.pt")
        return cached

    first = retrain()
    written = first.stat().st_mtime_ns
    assert retrain() == first and first.stat().st_mtime_ns == written  # loaded, not redone
