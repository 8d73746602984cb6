"""Model loading, per-condition rows and batched greedy generation shared by the CAVSR and MCQ evals.

`--ckpt` may be: empty / "none" (the base model alone), a PEFT adapter directory (adapter_config.json +
adapter_model.safetensors, as `lit_modules/sft.py` writes), or a full thinker checkpoint directory
(config.json + safetensors, e.g. merged weights); `avcot.model.checkpoint_kind` decides which and
`avcot.model.load_model` loads it. The processor comes from the full checkpoint when it carries one, else
from `--base`. Each condition's rows go through `avcot.data` (the row checks, prompts and encoding of the
training path): read and checked up front, decoded lazily, batched left-padded in manifest order.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from avcot.chat import collate
from avcot.data.examples import Example, ExampleDataset, RowTask, Skipped, example_dataset, prepare_rows
from avcot.data.rows import RejectLog
from avcot.manifest import manifest_source
from avcot.rollout import generate_texts


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


@dataclass(frozen=True)
class ConditionRows:
    """One condition's rows of the manifest: the checked records, how many came in, their examples."""

    rows: tuple[dict, ...]
    """Records that passed the up-front checks (empty when every row was rejected)."""
    rows_in: int
    """Entries the manifest holds."""
    dataset: ExampleDataset | None
    """Their prompt-only examples, decoded lazily; None when no row passed."""


def condition_rows(task: RowTask, manifest: str, processor, rejects: RejectLog) -> ConditionRows:
    """Read and check `manifest` for one condition (`task` fixes the prompt and media), rejects into `rejects`.

    A condition with nothing to score is a row in the report (rows in = rejected), not the end of the run;
    structural errors (unreadable manifest, missing column) still raise.
    """
    source = str(manifest_source(manifest))
    kept, counts = prepare_rows(source, task, with_target=False, policy="skip", rejects=rejects)
    if not kept:
        return ConditionRows((), counts.rows_in, None)
    ds = example_dataset(task, kept, processor, source=source, with_target=False, policy="skip", rejects=rejects,
                         rows_in=counts.rows_in)
    return ConditionRows(tuple(ds.rows), counts.rows_in, ds)


def predict_batches(dataset: ExampleDataset, pad_id: int, batch_size: int,
                    rejects: RejectLog) -> Iterator[tuple[tuple[Example, ...], dict]]:
    """(examples, left-padded batch) in manifest order, decoded in this process; a row that fails to decode
    is recorded in `rejects` (once) and left out of its batch."""
    for start in range(0, len(dataset), batch_size):
        built = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        for s in built:
            if isinstance(s, Skipped):
                rejects.add(s.reject, s.line)
        kept = tuple(e for e in built if isinstance(e, Example))
        if kept:
            yield kept, collate([e.encoded for e in kept], pad_id, padding_side="left")


def processor_source(spec: ModelSpec) -> str:
    """Processor to pair with the model: the full checkpoint's own when it has a tokenizer, else the base's."""
    from avcot.model import base_and_adapter

    model, adapter = base_and_adapter(spec.ckpt, spec.base)
    if adapter is None and model != spec.base and (Path(model) / "tokenizer_config.json").is_file():
        return model
    return spec.base


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_eval_model(spec: ModelSpec):
    """The thinker with the checkpoint applied (`avcot.model.load_model`), in eval mode on its device."""
    from avcot.model import base_and_adapter, load_model

    model, adapter = base_and_adapter(spec.ckpt, spec.base)
    return load_model(model, adapter, dtype=spec.dtype, seed=spec.seed).to(resolve_device(spec.device)).eval()


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


def generate_condition(model, processor, data: ConditionRows, *, batch_size: int, rejects: RejectLog,
                       max_new_tokens: int, desc: str = "generate", progress: bool = True) -> Iterator[Generated]:
    """Greedy generation over the condition's examples in left-padded `predict_batches`."""
    from tqdm.auto import tqdm

    if data.dataset is None:
        return
    device, dtype = next(model.parameters()).device, model_dtype(model)
    batches = predict_batches(data.dataset, processor.tokenizer.pad_token_id, batch_size, rejects)
    total = -(-len(data.dataset) // batch_size)
    for examples, batch in tqdm(batches, desc=desc, total=total, disable=not progress, unit="batch"):
        texts = generate_texts(model, processor, move_batch(batch, device, dtype), max_new_tokens=max_new_tokens,
                               do_sample=False)
        yield Generated(tuple(e.id for e in examples), tuple(e.reference for e in examples), tuple(texts))
