"""GRPO's reference policy: the weights the KL term anchors the policy to.

Two choices (`ReferenceKind`):

- ``"start"`` (default): the policy GRPO starts from. After a LoRA SFT cold start that is base + the SFT adapter,
  so the adapter is loaded twice: once trainable (PEFT's ``"default"``, the policy) and once frozen under the name
  ``"reference"``. The reference forward makes ``"reference"`` the active adapter of every LoRA layer for its
  duration. Without an SFT adapter the start is the base itself (a fresh LoRA has B = 0), so the reference is the
  base with the adapter disabled; after a full fine-tune ``base`` is that model, so this is again the start.
- ``"base"``: the base with the adapter disabled, whatever the start: the KL pulls toward the model before SFT.

Why a second adapter rather than merging the SFT adapter into the base and training a fresh one: an nf4 base
cannot take a merge without dequantising it, and the saved adapters would then be deltas on a merged base that
exists nowhere on disk. The frozen copy costs one more adapter's weights (megabytes on 7B), needs no
`requires_grad` change while it is active (so the optimizer, the DDP reducer and the FSDP2 groups keep seeing the
same trainable set), is never checkpointed (it is frozen), and is rebuilt from the adapter directory on resume.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

ReferenceKind = Literal["start", "base"]
REFERENCE_ADAPTER = "reference"
POLICY_ADAPTER = "default"  # the name PEFT gives the first (here: trainable) adapter


def add_reference_adapter(model, adapter_dir: str):
    """Load `adapter_dir` a second time into the PEFT `model`, frozen, as the "reference" adapter.

    The trainable adapter stays the active one; the copy only takes part in forwards run under
    `reference_weights`.
    """
    if REFERENCE_ADAPTER in model.peft_config:
        raise ValueError(f"the model already has an adapter named {REFERENCE_ADAPTER!r}")
    model.load_adapter(adapter_dir, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    if any(p.requires_grad for n, p in model.named_parameters() if f".{REFERENCE_ADAPTER}." in n):
        raise RuntimeError("the reference adapter was loaded trainable")  # PEFT contract: is_trainable=False
    return model


def has_reference_adapter(model) -> bool:
    """Whether `model` carries a frozen "reference" adapter (see `add_reference_adapter`)."""
    return REFERENCE_ADAPTER in (getattr(model, "peft_config", None) or {})


def _adapter_layers(model) -> list:
    """Every module that routes its forward by an active adapter name: LoRA layers, modules_to_save copies."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return [m for m in model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]


@contextlib.contextmanager
def active_adapter(model, name: str) -> Iterator[None]:
    """Inside, every adapter layer of `model` computes with adapter `name`; requires_grad is left untouched.

    PEFT's `set_adapter` also flips requires_grad (active adapter trainable, the others frozen), which would
    change the trainable set under the optimizer and the DDP/FSDP2 wrappers; here only the routing changes.
    """
    layers = [m for m in _adapter_layers(model) if name in _names_of(m)]
    if not layers:
        raise ValueError(f"no adapter layer of the model holds an adapter named {name!r}")
    saved = [m._active_adapter for m in layers]
    try:
        for m in layers:
            m._active_adapter = [name]
        yield
    finally:
        for m, old in zip(layers, saved):
            m._active_adapter = old


def _names_of(layer) -> set[str]:
    """Adapter names a layer holds weights for."""
    holders = ("lora_A", "lora_embedding_A", "modules_to_save")
    return {name for attr in holders for name in (getattr(layer, attr, None) or {}).keys()}


def reference_weights(model) -> contextlib.AbstractContextManager:
    """Context in which `model` computes the reference policy: its "reference" adapter if it has one, else the
    base with the adapter disabled."""
    if has_reference_adapter(model):
        return active_adapter(model, REFERENCE_ADAPTER)
    return model.disable_adapter()


def describe_reference(base: str, adapter: str | None, kind: ReferenceKind) -> str:
    """One line for the start-up log: what the policy starts from and what the KL anchors it to."""
    start = f"base {base!r} + SFT adapter {adapter!r}" if adapter else f"base {base!r} + a fresh LoRA adapter"
    if kind == "start" and adapter:
        ref = f"the SFT adapter {adapter!r}, frozen (a second copy loaded as {REFERENCE_ADAPTER!r})"
    elif kind == "start":
        ref = f"base {base!r} with the adapter disabled (= the start: a fresh LoRA is zero)"
    else:
        ref = f"base {base!r} with the adapter disabled (reference='base')"
    return f"GRPO policy starts from {start}; KL reference: {ref}"
