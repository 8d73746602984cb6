"""Model loading, per-condition DataModule setup and batched greedy generation shared by the CAVSR and MCQ evals.

`--ckpt` may be: empty / "none" (the base model alone), a PEFT adapter directory (adapter_config.json +
adapter_model.safetensors, as `lit_modules/sft.py` writes), or a full thinker checkpoint directory
(config.json + safetensors, e.g. merged weights). The processor comes from the full checkpoint when it
carries one, else from `--base`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from avcot.rollout import generate_texts

CkptKind = Literal["none", "adapter", "full"]


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to evaluate and where."""

    ckpt: str | None = None
    """PEFT adapter dir, full checkpoint dir, or None/'none' for the base model alone."""
    base: str = "tiny"
    """Base model: 'tiny' (embedded, random init) or a Qwen2.5-Omni checkpoint directory."""
    dtype: str = "float32"
    """Weights dtype: float32 | bfloat16 | float16."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda[:i]'."""
    seed: int = 0
    """Seed of the tiny model's random init (must match the seed it was trained from)."""


@dataclass(frozen=True)
class Generated:
    """Outputs of one batch: row ids, references (from the DataModule) and decoded texts."""

    ids: tuple[str, ...]
    references: tuple[str, ...]
    texts: tuple[str, ...]


def condition_rejects_path(out: str | Path, condition: str) -> Path:
    """Where one condition's DataModule writes its rejects, before they are tagged with the condition."""
    return Path(out) / f"rejects.{condition}.partial.jsonl"


def setup_predict(dm) -> bool:
    """`dm.setup("predict")`; False (rejects recorded) when every row was rejected, instead of raising.

    An eval goes on to the next condition: a condition with nothing to score is a row in the report
    (rows in = rejected), not the end of the run. Structural errors (unreadable manifest) still raise.
    """
    from avcot.data.rows import BadRowError

    try:
        dm.setup("predict")
    except BadRowError:
        if not dm.counts:  # raised before the manifest was counted: not the all-rejected case
            raise
        return False
    return True


def rows_in(dm) -> int:
    """Rows the DataModule read from its manifest(s) (set by setup, even when all were rejected)."""
    return sum(c.rows_in for c in dm.counts.values())


def checkpoint_kind(ckpt: str | None) -> CkptKind:
    """Classify `ckpt`; a path that is neither an adapter nor a checkpoint directory is a clear error."""
    if ckpt is None or str(ckpt).strip().lower() in ("", "none"):
        return "none"
    path = Path(ckpt).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"--ckpt {ckpt!r} is not a directory (expected a PEFT adapter or checkpoint dir)")
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "full"
    raise FileNotFoundError(f"--ckpt {ckpt!r} has neither adapter_config.json (PEFT adapter) nor config.json "
                            "(full checkpoint)")


def processor_source(spec: ModelSpec) -> str:
    """Processor to pair with the model: the full checkpoint's own when it has a tokenizer, else the base's."""
    if checkpoint_kind(spec.ckpt) == "full" and (Path(spec.ckpt).expanduser() / "tokenizer_config.json").is_file():
        return str(Path(spec.ckpt).expanduser())
    return spec.base


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_eval_model(spec: ModelSpec):
    """The thinker with the checkpoint applied, in eval mode on its device."""
    from avcot.model import load_adapter, load_thinker

    kind = checkpoint_kind(spec.ckpt)
    if kind == "full":
        model = load_thinker(str(Path(spec.ckpt).expanduser()), dtype=spec.dtype)
    else:
        model = load_thinker(spec.base, dtype=spec.dtype, seed=spec.seed)
        if kind == "adapter":
            model = load_adapter(model, str(Path(spec.ckpt).expanduser()), trainable=False)
    return model.to(resolve_device(spec.device)).eval()


def move_batch(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Tensors to `device`; floating media tensors to the model's dtype (ids/masks keep theirs)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            if v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def model_dtype(model) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def generate_loader(model, processor, loader: Iterable[dict | None], *, max_new_tokens: int,
                    desc: str = "generate", progress: bool = True) -> Iterator[Generated]:
    """Greedy generation over a left-padded DataLoader; skipped (None) batches are passed over."""
    from tqdm.auto import tqdm

    device, dtype = next(model.parameters()).device, model_dtype(model)
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch in tqdm(loader, desc=desc, total=total, disable=not progress, unit="batch"):
        if batch is None:
            continue
        texts = generate_texts(model, processor, move_batch(batch, device, dtype), max_new_tokens=max_new_tokens,
                               do_sample=False)
        refs = batch.get("meta", {}).get("references", [""] * len(texts))
        yield Generated(tuple(batch["ids"]), tuple(refs), tuple(texts))
