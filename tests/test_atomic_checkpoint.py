"""Lightning checkpoints are written atomically: a failed save never replaces or truncates the target."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_modules.checkpoint import AtomicCheckpointIO, use_atomic_checkpoints


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails midway through torch.save
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000), "bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind
    assert torch.load(path, weights_only=True)["step"] == 1


def test_successful_save_replaces_and_loads(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "x.ckpt"
    io.save_checkpoint({"step": 1}, path)
    io.save_checkpoint({"step": 2}, path)
    assert io.load_checkpoint(path, weights_only=True)["step"] == 2


def test_modules_install_atomic_io_on_the_trainer(tmp_path):
    from lit_modules.grpo import GRPOModule
    from lit_modules.sft import SFTModule

    for module in (SFTModule(), GRPOModule()):
        trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
        assert not isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
        module.trainer = trainer
        module.setup("fit")
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_custom_io_plugins_are_kept(tmp_path):
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class MyIO(TorchCheckpointIO):
        pass

    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path, plugins=[MyIO()])
    use_atomic_checkpoints(trainer)
    assert type(trainer.strategy.checkpoint_io) is MyIO
