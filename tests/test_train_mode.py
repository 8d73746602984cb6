"""A model loaded from a checkpoint directory trains in train mode, as the embedded tiny one does.

`from_pretrained` returns a model in eval mode and Lightning does not switch submodules, so without an explicit
`.train()` a real checkpoint would fine-tune with its LoRA dropout (the paper's 0.05) silently off.
"""
from __future__ import annotations

import pytest

from lit_modules.grpo import GRPOModule
from lit_modules.sft import SFTModule


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    from avcot.model import build_tiny_thinker
    from avcot.processor import load_processor

    path = tmp_path_factory.mktemp("ckpt")
    build_tiny_thinker().save_pretrained(str(path))
    load_processor("tiny").save_pretrained(str(path))
    return str(path)


def _modes(model) -> set[bool]:
    return {m.training for m in model.modules()}


@pytest.mark.parametrize("make", [
    lambda base: SFTModule(base=base, finetune="lora"),
    lambda base: SFTModule(base=base, finetune="full", train_towers=True),
    lambda base: GRPOModule(base=base),
], ids=["sft-lora", "sft-full", "grpo"])
def test_a_checkpoint_base_is_in_train_mode_with_active_lora_dropout(checkpoint_dir, make):
    from avcot.model import load_thinker

    assert _modes(load_thinker(checkpoint_dir)) == {False}  # what from_pretrained hands over
    module = make(checkpoint_dir)
    module.configure_model()
    assert _modes(module.model) == {True}
    dropouts = [m for n, m in module.model.named_modules() if n.endswith("lora_dropout.default")]
    assert all(d.training for d in dropouts)
