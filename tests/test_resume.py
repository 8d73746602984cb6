"""Resume from a (LoRA-only) checkpoint: the step count continues, an interrupted-and-resumed run sees exactly
the batches (ids, batch by batch) of an uninterrupted one from a mid-epoch or an end-of-epoch checkpoint, and
the loss trajectory matches, both in-process and after a `kill -9` of a `fit` subprocess.

LoRA dropout is 0 here: Lightning does not restore the global RNG, so dropout masks after a resume
would differ from the uninterrupted run's; the data order does not depend on it (EpochSeededSampler).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from helpers import write_traced_manifest
from training_probes import BatchIds, StopAtStep

from avcot.model import LoraSettings
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
    trainer.fit(SFTModule(lr=1e-2, lora=LoraSettings(dropout=0.0), warmup_steps=2), dm, ckpt_path=ckpt_path)
    return trainer


def _fit_ids(manifest: Path, root: Path, *, group_by_length: bool, num_workers: int, max_steps: bool,
             stop: int | None = None, ckpt_path: Path | None = None) -> list[tuple[str, ...]]:
    """Ids of every training batch of a 2-epoch fit (`max_epochs=2`, or `max_steps=8`: iteration-based) through
    the real CavsrDataModule (10 rows: 8 train in batches of 2, 2 val), with a checkpoint after every step
    (steps/) and every epoch (epochs/)."""
    dm = CavsrDataModule(train_manifest=str(manifest), val_fraction=0.2, split_column=None, batch_size=2,
                         num_frames=2, frame_size=56, max_seconds=2.0, group_by_length=group_by_length,
                         num_workers=num_workers, rejects_path=str(root / "rejects.jsonl"))
    callbacks = [ModelCheckpoint(dirpath=str(root / "steps"), every_n_train_steps=1, save_top_k=-1),
                 ModelCheckpoint(dirpath=str(root / "epochs"), every_n_epochs=1, save_top_k=-1)]
    length = dict(max_epochs=-1, max_steps=8) if max_steps else dict(max_epochs=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=str(root),
                        callbacks=callbacks + ([StopAtStep(stop)] if stop else []), **length)
    module = BatchIds()
    trainer.fit(module, dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return module.ids


@pytest.mark.parametrize("group_by_length,num_workers,max_steps", [
    pytest.param(False, 0, False, id="shuffle-main-epochs"), pytest.param(True, 1, True, id="grouped-workers-steps"),
    # ~12 s each: the two above cover both samplers, workers and both ways of ending a run
    pytest.param(True, 0, False, id="grouped-main-epochs", marks=pytest.mark.slow),
    pytest.param(False, 1, False, id="shuffle-workers-epochs", marks=pytest.mark.slow),
    pytest.param(False, 0, True, id="shuffle-main-steps", marks=pytest.mark.slow),
])
def test_interrupted_and_resumed_run_sees_the_same_batches(tmp_path, group_by_length, num_workers, max_steps):
    """Mid-epoch: a plain loader started the epoch over (first batches twice, last never). End of epoch: with
    workers the resumed epoch drew the shuffle of epoch 0 (indices sent to the workers before set_epoch); with
    max_steps Lightning ran one batch more as part of epoch 0, then epoch 1 with the shuffle of epoch 2."""
    manifest = write_traced_manifest(tmp_path / "m.jsonl", 10)
    kw = dict(group_by_length=group_by_length, num_workers=num_workers, max_steps=max_steps)
    full = _fit_ids(manifest, tmp_path / "full", **kw)
    assert len(full) == 8 and len(set(full[:4])) == 4 and full[:4] != full[4:]
    cut = _fit_ids(manifest, tmp_path / "cut", stop=6, **kw)  # 2 batches into epoch 1
    assert cut == full[:6]
    mid = _fit_ids(manifest, tmp_path / "mid", ckpt_path=tmp_path / "cut" / "steps" / "epoch=1-step=6.ckpt", **kw)
    assert mid == full[6:]
    end = _fit_ids(manifest, tmp_path / "end", ckpt_path=tmp_path / "cut" / "epochs" / "epoch=0-step=4.ckpt", **kw)
    assert end == full[4:]


def _counting_loader(built: list[int]):
    from avcot.data.examples import EpochSeededSampler
    from avcot.data.loader import RowLoader

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            built.append(i)
            return i

    return RowLoader(Items(), batch_size=2, sampler=EpochSeededSampler(10, seed=1), resumable=True,
                     collate_fn=lambda xs: {"ids": xs, "meta": {}})


def _epoch_batches(epoch: int) -> list[list[int]]:
    reference = _counting_loader([])
    reference.sampler.set_epoch(epoch)
    return [b["ids"] for b in reference]


def test_row_loader_skips_trained_batches_without_decoding_them():
    """After `load_state_dict`, the epoch's first batches are skipped as indices (never built) and the position
    goes on from there; a fresh loader reads the sampler's epoch on the first `next()`, after `set_epoch`."""
    built: list[int] = []
    fresh = _counting_loader(built)
    it = iter(fresh)  # Lightning creates the iterator first ...
    fresh.sampler.set_epoch(3)  # ... and sets the epoch after
    assert [b["ids"] for b in it] == _epoch_batches(3)
    resumed = _counting_loader(built)
    resumed.load_state_dict({"epoch": 3, "batches": 2})
    built.clear()
    # Lightning takes the epoch's remaining 3 of len(loader) == 5 batches (it restored "2 done")
    assert [b["ids"] for b in itertools.islice(resumed, 3)] == _epoch_batches(3)[2:]
    assert sorted(built) == sorted(i for b in _epoch_batches(3)[2:] for i in b)
    assert resumed.state_dict() == {"epoch": 3, "batches": 5} and len(resumed) == 5
    assert [b["ids"] for b in resumed] == _epoch_batches(4)  # the next pass is the next epoch, whole


def test_row_loader_position_wins_over_an_out_of_step_epoch():
    """Lightning's iteration-based resume from an end-of-epoch checkpoint takes one batch as the end of the old
    epoch, then calls set_epoch(e + 2) for epoch e + 1: the stream must go on with epoch e + 1."""
    loader = _counting_loader([])
    loader.load_state_dict({"epoch": 0, "batches": 5})  # epoch 0 was complete
    loader.sampler.set_epoch(1)
    assert next(iter(loader))["ids"] == _epoch_batches(1)[0]  # pass abandoned after one batch
    loader.sampler.set_epoch(2)
    assert [b["ids"] for b in loader] == _epoch_batches(1)[1:] + _epoch_batches(2)[:1]


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
            "--model.init_args.finetune", "lora", "--data.init_args.batch_size", "2",  # adapter-last, 4 steps/epoch
            "--model.init_args.lora.dropout", "0.0", "--data.init_args.train_manifest", str(manifest),
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
    ckpt = cut_root / "checkpoints" / "epoch=0-step=4.ckpt"
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


DDP_SCRIPT = """
import json, sys
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from datamodules.cavsr import CavsrDataModule
from training_probes import BatchIds, StopAtStep

manifest, out, stop, ckpt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


class Record(BatchIds):
    def training_step(self, batch, batch_idx):
        with open(f"{out}/ids{self.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(list(batch.ids)) + "\\n")
        return super().training_step(batch, batch_idx)


dm = CavsrDataModule(train_manifest=manifest, val_fraction=0.0, batch_size=2, num_frames=2, frame_size=56,
                     max_seconds=2.0, num_workers=1, rejects_path=out + "/r.jsonl")
callbacks = [ModelCheckpoint(dirpath=out + "/ck", every_n_train_steps=1, save_top_k=-1)]
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0, default_root_dir=out,
                    callbacks=callbacks + ([StopAtStep(stop)] if stop else []))
trainer.fit(Record(), dm, ckpt_path=None if ckpt == "-" else ckpt)
"""


@pytest.mark.slow  # three 2-rank DDP runs: 60-200 s on 2 shared cores
def test_ddp_resume_sees_the_same_batches_on_every_rank(tmp_path):
    """Under DDP Lightning re-creates the loader around a distributed sampler wrapper: each rank's batches after a
    mid-epoch resume are still the uninterrupted run's, and a clip that fails to decode on one rank is counted
    once in the totals printed on rank 0."""
    from multiproc import run_ranks
    from helpers import BAD, traced_rows, write_manifest

    rows = traced_rows(8)
    shutil.copy(BAD / "truncated.mp4", tmp_path / "t.mp4")
    manifest = write_manifest(rows + [dict(rows[0], id="trunc", video="t.mp4", audio=None)], tmp_path / "m.jsonl")
    (tmp_path / "train.py").write_text(DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}", OMP_NUM_THREADS="1")

    def fit(name: str, stop: int = 0, ckpt: str = "-") -> tuple[list[list], str]:
        (tmp_path / name).mkdir()
        rc, out, err = run_ranks([sys.executable, str(tmp_path / "train.py"), str(manifest), str(tmp_path / name),
                                  str(stop), ckpt], cwd=REPO, env=env)
        assert rc == 0, err[-3000:]
        ids = [[json.loads(x) for x in (tmp_path / name / f"ids{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
        return ids, out

    full, out = fit("full")  # 9 rows padded to 10: 5 per rank, 3 batches per rank per epoch
    assert "rows at the end of fit: " in out and "rows_in=9 rows_used=8 rows_rejected=1" in out
    cut, _ = fit("cut", stop=4)
    resumed, _ = fit("resumed", ckpt=str(tmp_path / "cut" / "ck" / "epoch=1-step=4.ckpt"))
    for rank in (0, 1):
        assert len(full[rank]) == 6 and cut[rank] == full[rank][:4] and resumed[rank] == full[rank][4:], rank
