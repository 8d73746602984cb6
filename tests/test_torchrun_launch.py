"""The multi-process launch the cluster guide documents, on CPU: torchrun starts two ranks of `avcot.cli fit` (gloo,
DDP), Lightning takes the ranks from torchrun's environment, and the run writes one checkpoint and the model
under default_root_dir. The same arguments with `srun` instead of torchrun are the SLURM launch."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import traced_rows, write_jsonl
from multiproc import run_ranks

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # two ranks each load the tiny model and train 2 steps: ~60-180 s on 2 shared cores
def test_torchrun_two_cpu_ranks_fit_and_write_one_checkpoint(tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", traced_rows(4))
    root = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "avcot.cli", "fit", "--config", "configs/tiny.yaml",
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(root), "--data.init_args.train_manifest", str(manifest),
           "--data.init_args.val_fraction", "0", "--data.init_args.batch_size", "2"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    rc, out, err = run_ranks(cmd, cwd=REPO, env=env, timeout=600)
    assert rc == 0, err[-3000:]
    ckdir = root / "checkpoints"
    assert [p.name for p in ckdir.glob("*.ckpt")] == ["epoch=1-step=2.ckpt"]  # 4 rows / (2 ranks x batch 2)
    assert (ckdir / "model-last" / "model.safetensors").is_file()  # tiny.yaml is full fine-tuning
    assert (root / "version_0" / "metrics.csv").is_file() and not (root / "version_1").exists()  # rank 0 logs
    assert "Starting with 2 processes" in err + out  # both ranks joined one gloo group
