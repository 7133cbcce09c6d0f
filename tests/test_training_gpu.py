"""Training on a CUDA GPU: every strategy in fp16 autocast, the custom losses' values under
autocast against fp32 on the CPU, and ``torchrun`` over NCCL with one process per GPU.

Skipped where torch sees no GPU (CI and the 2-core machines); run on a GPU machine with
``pytest -m gpu``. The rest of the suite also runs there unchanged: the Trainer then picks the
GPU by itself, so tests/test_training.py exercises the same code on CUDA.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cormorant.training.config import TrainConfig
from tests.training_data import write_training_beir

DEVICES = ("cpu", "cuda")  # the fp32 reference first
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_beir(tmp_path_factory.mktemp("train-gpu") / "ds")


def config(train_dir: Path, out: Path, encoder: Path, **changes: object) -> TrainConfig:
    base = {"dataset": train_dir, "out": out, "base_model": str(encoder), "batch_size": 4,
            "epochs": 1, "dev_fraction": 0.2, "max_steps": 4}
    return TrainConfig.from_dict({**base, **changes})


@pytest.mark.parametrize("changes", [
    {"negatives": "in-batch"}, {"negatives": "in-batch", "cached": True, "mini_batch_size": 2},
    {"negatives": "bm25"}, {"negatives": "dense"}, {"negatives": "star"},
    {"negatives": "star+adore"}, {"negatives": "distill-query", "student_layers": 1},
    {"kind": "cross-encoder", "negatives": "bm25"},
], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_every_strategy_trains_on_the_gpu_in_fp16(train_dir, tiny_encoder, tmp_path, changes) -> None:
    from cormorant.training.trainer import train

    out = tmp_path / "m"
    result = train(config(train_dir, out, tiny_encoder, **changes))
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["hardware"]["device"] == "cuda"
    assert summary["hardware"]["precision"] == "fp16"
    assert result.losses and all(math.isfinite(v) for v in result.losses), result.losses
    assert result.steps == 4
    assert not (tmp_path / "m.work").exists()


def test_tas_balanced_trains_on_the_gpu_with_a_bi_encoder_teacher(train_dir, tiny_encoder,
                                                                  other_tiny_encoder,
                                                                  tmp_path) -> None:
    from cormorant.training.trainer import train

    out = tmp_path / "tas"
    result = train(config(train_dir, out, tiny_encoder, negatives="tas-balanced",
                          teacher=str(other_tiny_encoder)))
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["hardware"]["precision"] == "fp16"
    assert all(math.isfinite(v) for v in result.losses)


def test_fp16_false_trains_in_fp32_on_the_gpu(train_dir, tiny_encoder, tmp_path) -> None:
    from cormorant.training.trainer import train

    train(config(train_dir, tmp_path / "m", tiny_encoder, negatives="in-batch", fp16=False))
    summary = json.loads((tmp_path / "m" / "training" / "summary.json").read_text())
    assert summary["hardware"]["device"] == "cuda"
    assert summary["hardware"]["precision"] == "fp32"


def _batch(model, texts: list[list[str]], device: str) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(device) if isinstance(v, torch.Tensor) else v
             for k, v in model.tokenize(column).items()} for column in texts]


def test_custom_losses_under_fp16_autocast_match_fp32_on_the_cpu(tiny_encoder) -> None:
    """STAR, ADORE and TAS-Balanced build their scores from the batch's embeddings and arrays
    made before training; under the Trainer's fp16 autocast on the GPU they must give the loss
    that fp32 gives on the CPU (to fp16's precision), and a finite gradient."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from cormorant.training.losses import ADORELoss, STARLoss, TASBalancedLoss

    queries = ["heart marker0x1 effect", "sleep marker1x0 effect", "bone marker8x2 effect"]
    positives = ["heart study marker0x1 heart", "sleep marker1x0 sleep", "bone bone marker8x2"]
    negatives = ["liver blood skin", "diet lung brain", "virus cancer heart"]
    rng = np.random.default_rng(0)

    def unit_rows(rows: int) -> np.ndarray:  # cosine-model vectors, as the teachers give
        vectors = rng.normal(size=(rows, 32)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    doc_vectors = unit_rows(40)
    teacher = [unit_rows(3) for _ in range(3)]  # drawn once: both devices see the same
    losses = {
        "star": lambda m: STARLoss(m, [(0, 0, 3), (1, 1, 4), (2, 2, 5)],
                                   {0: {0}, 1: {1}, 2: {2}}),
        "adore": lambda m: ADORELoss(m, doc_vectors, {0: [1], 1: [7, 9], 2: [30]}, [0, 1, 2],
                                     top_k=10, metric_cut=10),
        "tas": lambda m: TASBalancedLoss.per_row(m, np.array([1.0, -0.5, 2.0]), *teacher),
    }
    columns = {"star": [queries, positives, negatives], "adore": [queries],
               "tas": [queries, positives, negatives]}
    labels = torch.tensor([0, 1, 2])
    for name, make in losses.items():
        values = {}
        for device in DEVICES:
            model = SentenceTransformer(str(tiny_encoder), device=device)
            loss = make(model)
            with torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
                value = loss(_batch(model, columns[name], device), labels.to(device))
            value.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads), (name, device)
            values[device] = value.item()
        # ADORE ranks with the fp16 query vectors, so near-tied documents may swap ranks.
        assert values[DEVICES[1]] == pytest.approx(values["cpu"], rel=5e-2, abs=5e-3), (name, values)


def test_torchrun_over_nccl_trains_with_one_process_per_gpu(train_dir, tiny_encoder,
                                                            tmp_path) -> None:
    """The launch users run on a GPU machine: one process per GPU, NCCL. With several GPUs the
    in-batch negatives are gathered from all of them; with one, the same launch trains alone."""
    gpus = torch.cuda.device_count()
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m",
                                                         "torch.distributed.run"]
    done = subprocess.run(
        [*command, "--nproc_per_node", str(gpus), "--master_port",
         str(29600 + os.getpid() % 1000), "-m", "cormorant.cli", "train", "--dataset",
         str(train_dir), "--negatives", "in-batch", "--base-model", str(tiny_encoder), "--out",
         str(out), "--batch-size", "4", "--max-steps", "3"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained in-batch for") == 1
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["hardware"]["device"] == "cuda"
    assert summary["hardware"].get("backend") == "nccl"
    assert summary["processes"] == gpus
    assert summary["gathered_across_processes"] is (gpus > 1)
