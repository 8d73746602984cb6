"""Resume from a (LoRA-only) checkpoint: the step count continues and the loss trajectory matches an
uninterrupted run, both in-process and after a `kill -9` of a `fit` subprocess.

LoRA dropout is 0 here: Lightning does not restore the global RNG, so dropout masks after a resume
would differ from the uninterrupted run's; the data order does not depend on it (EpochSeededSampler).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from test_datamodule import write_traced_manifest

from datamodules.cavsr import CavsrDataModule
from lit_modules.sft import SFTModule

REPO = Path(__file__).resolve().parent.parent


class LossRecorder(Callback):
    def __init__(self, stop_after_epoch: int | None = None):
        self.losses: dict[int, float] = {}
        self.stop_after_epoch = stop_after_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])

    def on_train_epoch_end(self, trainer, pl_module):
        if self.stop_after_epoch is not None and trainer.current_epoch >= self.stop_after_epoch:
            trainer.should_stop = True  # an interruption right after the epoch-end checkpoint


def _run(manifest: Path, root: Path, recorder: LossRecorder, ckpt_path: str | None = None) -> L.Trainer:
    dm = CavsrDataModule(train_manifest=str(manifest), val_fraction=0.0, batch_size=2,
                         rejects_path=str(root / "rejects.jsonl"))
    ckpt = ModelCheckpoint(dirpath=str(root / "ck"), every_n_epochs=1, save_top_k=-1)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[recorder, ckpt],
                        default_root_dir=str(root))
    trainer.fit(SFTModule(lr=1e-2, lora_dropout=0.0, warmup_steps=2), dm, ckpt_path=ckpt_path)
    return trainer


def test_resume_continues_steps_and_loss_trajectory(tmp_path):
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 6)  # 3 steps per epoch
    full = LossRecorder()
    _run(manifest, tmp_path / "full", full)
    assert sorted(full.losses) == list(range(1, 7))

    first = LossRecorder(stop_after_epoch=0)
    t1 = _run(manifest, tmp_path / "cut", first)
    saved = t1.global_step
    assert saved == 3
    ckpt = tmp_path / "cut" / "ck" / "epoch=0-step=3.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 3 and all("lora_" in k for k in state["state_dict"])

    resumed = LossRecorder()
    t2 = _run(manifest, tmp_path / "cut", resumed, ckpt_path=str(ckpt))
    assert t2.global_step == 6 and min(resumed.losses) == saved + 1
    for step, loss in resumed.losses.items():
        assert abs(loss - full.losses[step]) < 1e-4, (step, loss, full.losses[step])
    for step in range(1, saved + 1):  # the part before the cut matches too
        assert abs(first.losses[step] - full.losses[step]) < 1e-4


def _cli(root: Path, manifest: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "avcot.cli", "fit", "--config", "configs/tiny.yaml",
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
            "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0",
            "--model.init_args.lora_dropout", "0.0", "--data.init_args.train_manifest", str(manifest),
            "--data.init_args.target", "avcot",
            "--data.init_args.val_fraction", "0.0", "--data.init_args.rejects_path", str(root / "rejects.jsonl"),
            *extra]


def _losses(metrics_csv: Path) -> dict[int, float]:
    import polars as pl

    d = pl.read_csv(metrics_csv).filter(pl.col("train/loss").is_not_null())
    return {int(s) + 1: float(v) for s, v in zip(d["step"], d["train/loss"])}  # logged step = global_step - 1


@pytest.mark.slow  # three `fit` subprocesses: ~60-140 s on 2 shared cores
def test_resume_after_kill_minus_9(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 8)
    full_root, cut_root = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_cli(full_root, manifest), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    full = _losses(full_root / "version_0" / "metrics.csv")
    assert sorted(full) == list(range(1, 9))  # 8 clips, batch 2, 2 epochs

    proc = subprocess.Popen(_cli(cut_root, manifest), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = cut_root / "version_0" / "checkpoints" / "epoch=0-step=4.ckpt"
    deadline = time.time() + 240
    while not (ckpt.is_file() and (ckpt.parent / "adapter-last").is_dir()) and proc.poll() is None:
        assert time.time() < deadline, "no epoch-0 checkpoint appeared"
        time.sleep(0.2)
    time.sleep(0.3)  # the checkpoint is written; now die in the middle of epoch 1
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    subprocess.run(_cli(cut_root, manifest, "--ckpt_path", str(ckpt)), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    resumed = _losses(cut_root / "version_1" / "metrics.csv")
    assert min(resumed) == 5 and max(resumed) == 8  # continues from step 4, not from 0
    for step, loss in resumed.items():
        assert abs(loss - full[step]) < 1e-4, (step, loss, full[step])
