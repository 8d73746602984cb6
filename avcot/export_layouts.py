"""The three directory layouts `avcot.export` writes, and the safetensors shard streaming they share.

A merged thinker is first written by `save_pretrained` to a staging folder (so the tensor names are the ones
transformers writes and reads, whatever it renames in memory), then re-sharded under the layout's names:
without a prefix (`thinker`) or under `thinker.` (`vllm`, `full`); `full` adds the base's talker and
token2wav tensors. Every re-written shard is filled
from one source shard through `safe_open`, so at most one shard's tensors are in memory and a carried
tensor's bytes are the source's bytes (same dtype, shape and data; only the file it sits in changes); the
7B talker is never built as a model.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
STAGE = ".thinker-stage"


class ExportError(ValueError):
    """A user mistake the export refuses; the one-line message names the path and says what to do."""


@dataclass(frozen=True)
class ShardPlan:
    """One output shard: tensors read from `source` (one safetensors file), each as (name there, name here)."""

    source: Path
    names: tuple[tuple[str, str], ...]


def read_config(directory: Path) -> dict:
    """config.json of a checkpoint directory; an adapter or a directory without one is a clear error."""
    path = directory / "config.json"
    if not path.is_file():
        if (directory / "adapter_config.json").is_file():
            raise ExportError(f"{directory} is a LoRA adapter directory, not a model: pass it with --adapter "
                              "and give the model it was trained on with --base")
        raise ExportError(f"{directory} has no config.json: expected a Qwen2.5-Omni checkpoint directory")
    return json.loads(path.read_text(encoding="utf-8"))


def tensor_files(directory: str | Path) -> dict[str, Path]:
    """Each tensor name of a checkpoint directory -> the safetensors file that holds it.

    Reads `model.safetensors.index.json` when there is one, else the header of `model.safetensors`.
    """
    from safetensors import safe_open

    root = Path(directory)
    index = root / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: root / file for name, file in weight_map.items()}
    single = root / SINGLE
    if not single.is_file():
        raise ExportError(f"{root} has no {SINGLE} or {INDEX}")
    with safe_open(str(single), framework="pt") as f:
        return {name: single for name in f.keys()}


def tensor_shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor in `files`, from the headers (no tensor data is read)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(set(files.values())):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                if name in files:
                    shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def plans_by_file(files: dict[str, Path], rename: Callable[[str], str]) -> list[ShardPlan]:
    """One `ShardPlan` per source file holding a tensor of `files`; `rename(name)` gives its output name."""
    grouped: dict[Path, list[tuple[str, str]]] = {}
    for name in sorted(files):
        grouped.setdefault(files[name], []).append((name, rename(name)))
    return [ShardPlan(source=src, names=tuple(names)) for src, names in sorted(grouped.items())]


def shard_name(i: int, n: int) -> str:
    """`model.safetensors` for a single shard, else the Hugging Face `model-0000i-of-0000n.safetensors`."""
    return SINGLE if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def write_shards(plans: Sequence[ShardPlan], dst: Path, *, progress: bool = True) -> dict[str, str]:
    """Write one shard per plan under `dst` (plus the index when there are several); returns the weight map."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    out_names = [new for plan in plans for _, new in plan.names]
    if len(set(out_names)) != len(out_names):
        raise ValueError("two tensors would be written under the same name")
    weight_map: dict[str, str] = {}
    total_size = 0
    bar = tqdm(total=len(out_names), desc="Writing shards", unit="tensor", disable=not progress)
    for i, plan in enumerate(plans):
        file = shard_name(i, len(plans))
        tensors = {}
        with safe_open(str(plan.source), framework="pt") as f:
            for old, new in plan.names:
                tensors[new] = f.get_tensor(old)
                total_size += tensors[new].numel() * tensors[new].element_size()
                weight_map[new] = file
                bar.update(1)
        save_file(tensors, str(dst / file), metadata={"format": "pt"})
        del tensors  # one shard in memory at a time
    bar.close()
    if len(plans) > 1:
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return weight_map


def own_name(name: str) -> str:
    """A thinker tensor's name in a thinker-only checkpoint.

    A thinker loaded from a full checkpoint (key mapping `^thinker.` -> '') is saved back by transformers
    with that mapping reverted, i.e. with the `thinker.` prefix; a thinker-only checkpoint has none.
    """
    return name.removeprefix("thinker.")


def _stage_thinker(model, dst: Path, max_shard_size: str) -> dict[str, Path]:
    """save_pretrained the thinker under `dst/.thinker-stage`; its tensor -> file map (names as written)."""
    stage = dst / STAGE
    model.save_pretrained(str(stage), max_shard_size=max_shard_size)
    return tensor_files(stage)


def _prefixed(stage_files: dict[str, Path]) -> list[ShardPlan]:
    return plans_by_file(stage_files, lambda name: f"thinker.{own_name(name)}")


def write_thinker_layout(model, dst: Path, *, max_shard_size: str, progress: bool) -> tuple[int, int]:
    """The thinker as a thinker-only checkpoint (`save_pretrained` output, names without `thinker.`)."""
    stage_files = _stage_thinker(model, dst, max_shard_size)
    written = write_shards(plans_by_file(stage_files, own_name), dst, progress=progress)
    for name in ("config.json", "generation_config.json"):
        shutil.copy2(dst / STAGE / name, dst / name)
    shutil.rmtree(dst / STAGE)
    return len(written), 0


def write_vllm_layout(model, dst: Path, *, base_config: dict | None, max_shard_size: str,
                      progress: bool) -> tuple[int, int]:
    """Full-model config (audio output off) around the thinker's, `thinker.`-prefixed tensors, empty speaker map.

    `base_config` (a full base's config.json) lends its talker/token2wav sections; else transformers' defaults.
    """
    import torch
    from transformers import Qwen2_5OmniConfig

    stage_files = _stage_thinker(model, dst, max_shard_size)
    written = write_shards(_prefixed(stage_files), dst, progress=progress)
    stage = dst / STAGE
    subs = {k: base_config[k] for k in ("talker_config", "token2wav_config") if base_config and k in base_config}
    thinker_config = json.loads((stage / "config.json").read_text(encoding="utf-8"))
    config = Qwen2_5OmniConfig(thinker_config=thinker_config, enable_audio_output=False, **subs)
    config.architectures = ["Qwen2_5OmniForConditionalGeneration"]
    config.dtype = thinker_config.get("dtype", "float32")
    config.save_pretrained(str(dst))
    shutil.copy2(stage / "generation_config.json", dst / "generation_config.json")
    # Qwen2_5OmniForConditionalGeneration.from_pretrained raises without spk_dict.pt; it loads it weights_only.
    torch.save({}, dst / "spk_dict.pt")
    shutil.rmtree(stage)
    return len(written), 0


def check_same_thinker(stage_files: dict[str, Path], base_files: dict[str, Path], base: Path) -> None:
    """The written thinker must fill exactly the base's `thinker.` tensors, shape for shape."""
    ours = {f"thinker.{own_name(k)}": s for k, s in tensor_shapes(stage_files).items()}
    theirs = tensor_shapes({k: f for k, f in base_files.items() if k.startswith("thinker.")})
    missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    shape = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    if missing or extra or shape:
        parts = [f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for what, names in (("missing", missing), ("unexpected", extra), ("shape differs", shape)) if names]
        raise ExportError(f"the thinker does not match the thinker tensors of {base} ({'; '.join(parts)}): "
                          "was the adapter or --thinker trained from this base?")


def write_full_layout(model, dst: Path, *, base_dir: Path, max_shard_size: str, progress: bool) -> tuple[int, int]:
    """Merged thinker under `thinker.` + the base's talker/token2wav tensors byte for byte + the base's config."""
    base_files = tensor_files(base_dir)
    stage_files = _stage_thinker(model, dst, max_shard_size)
    check_same_thinker(stage_files, base_files, base_dir)
    carried = {k: f for k, f in base_files.items() if not k.startswith("thinker.")}
    write_shards(_prefixed(stage_files) + plans_by_file(carried, lambda name: name), dst, progress=progress)
    shutil.copy2(base_dir / "config.json", dst / "config.json")
    gen = base_dir / "generation_config.json"
    shutil.copy2(gen if gen.is_file() else dst / STAGE / "generation_config.json", dst / "generation_config.json")
    if (base_dir / "spk_dict.pt").is_file():  # copied as bytes, never unpickled here
        shutil.copy2(base_dir / "spk_dict.pt", dst / "spk_dict.pt")
    shutil.rmtree(dst / STAGE)
    return len(stage_files), len(carried)
