"""On-disk cache of frozen audio/vision tower outputs, reused across epochs.

Both papers freeze the encoders, so a media item's features never change during training; recomputing
them every epoch is wasted work (the vision tower is the costliest part of a short-answer SFT step).

Layout: `<root>/<tower fingerprint[:16]>/<item key[:2]>/<item key>.safetensors`, one file per media
item holding `features` [n_tokens, hidden] in the tower's dtype.
- Item key: BLAKE2b of the modality, dtype, shape and raw bytes of the item's encoder input (valid mel
  frames for audio; patch rows + t/h/w grid for video and images).
- Tower fingerprint: BLAKE2b of the audio and vision configs, dtypes, every parameter's name and shape,
  and a strided sample of up to 4096 values per parameter. Hashing every weight of a 7B checkpoint's
  towers (~1.3B values) on each start would take longer than it saves; any other checkpoint or
  re-initialisation changes essentially every value, so the sample tells them apart.
- Writes go to a temporary file in the same folder, then `os.replace` (atomic on POSIX): a crashed or
  concurrent writer never leaves a half-written entry. Only safetensors is read or written (no pickle).
- A file that cannot be read or has the wrong shape is recomputed and overwritten (counted in `stats`).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from avcot.thinker.forward import MODALITIES, MediaFeatures, MediaItem, encode_items, split_media, unwrap_thinker

FORMAT = "avcot-encoder-cache-v1"
SAMPLE = 4096


@dataclass
class CacheStats:
    """Counters since the cache was opened (mutable on purpose: a running tally)."""

    hits: int = 0
    misses: int = 0
    repaired: int = 0


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def item_key(item: MediaItem) -> str:
    """Content hash of one media item's encoder input (hex)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{FORMAT}|{item.modality}|{item.tensor.dtype}|{tuple(item.tensor.shape)}|".encode())
    if item.grid is not None:
        h.update(str([int(x) for x in item.grid]).encode())
    h.update(_tensor_bytes(item.tensor))
    return h.hexdigest()


@torch.no_grad()
def tower_fingerprint(model) -> str:
    """Fingerprint of the audio + vision towers: configs, dtypes, shapes and sampled weight values (hex)."""
    thinker = unwrap_thinker(model)
    h = hashlib.blake2b(digest_size=20)
    h.update(FORMAT.encode())
    for name in ("audio_tower", "visual"):
        tower = getattr(thinker.model, name)
        h.update(tower.config.to_json_string(use_diff=False).encode())
        for pname, p in sorted(tower.state_dict().items()):
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLE)
            h.update(f"{name}.{pname}|{tuple(p.shape)}|{p.dtype}|".encode())
            h.update(_tensor_bytes(flat[::step][:SAMPLE]))
    return h.hexdigest()


def expected_tokens(thinker, item: MediaItem) -> int:
    """How many LM placeholder tokens (= feature rows) `item` produces."""
    if item.modality == "audio":
        _, n = thinker.model.audio_tower._get_feat_extract_output_lengths(torch.tensor(item.tensor.shape[-1]))
        return int(n)
    return int(item.grid.prod()) // thinker.model.visual.spatial_merge_size ** 2


def media_keys(batch: dict) -> dict[str, list[str]]:
    """Item keys of every media item in `batch`, by modality.

    Hashing reads the media bytes on the host: call this where the batch is still on the CPU (in the
    DataLoader's collate: `avcot.batch.Batch.media_keys`) and pass the result to `features`.
    """
    return {m: [item_key(it) for it in items] for m, items in split_media(batch).items()}


def _atomic_save(tensor: torch.Tensor, path: Path, modality: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({"features": tensor.detach().contiguous().cpu()}, tmp, metadata={"modality": modality})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EncoderCache:
    """Frozen-tower outputs on disk, keyed by item content and tower fingerprint.

    `features(model, batch)` returns the same `MediaFeatures` as `compute_media_features`, reading hits
    from disk and running the towers only on misses (all misses of a modality in one call).
    """

    def __init__(self, root: str | os.PathLike, model):
        self.fingerprint = tower_fingerprint(model)
        self.root = Path(root).expanduser() / self.fingerprint[:16]
        self.root.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()

    def path_for(self, key: str) -> Path:
        """Where the entry for item `key` lives."""
        return self.root / key[:2] / f"{key}.safetensors"

    def _load(self, key: str, device: torch.device, shape: tuple[int, int]) -> torch.Tensor | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            t = load_file(str(path), device=str(device))["features"]
        except (SafetensorError, OSError, KeyError, RuntimeError):
            self.stats.repaired += 1
            return None
        if tuple(t.shape) != shape:
            self.stats.repaired += 1
            return None
        return t

    def features(self, model, batch: dict, keys: dict[str, list[str]] | None = None) -> MediaFeatures:
        """Per-item tower outputs for `batch`, from disk where cached, computed (and stored) otherwise.

        `keys`: `media_keys(batch)` computed earlier on the CPU copy (saves a device-to-host copy + hash).
        """
        thinker = unwrap_thinker(model)
        hidden = thinker.config.get_text_config().hidden_size
        device = thinker.model.get_input_embeddings().weight.device
        out: dict[str, tuple[torch.Tensor, ...]] = {}
        for modality, items in split_media(batch).items():
            mk = keys[modality] if keys is not None else [item_key(it) for it in items]
            if len(mk) != len(items):
                raise ValueError(f"{len(mk)} precomputed {modality} keys for {len(items)} {modality} items")
            found = [self._load(k, device, (expected_tokens(thinker, it), hidden)) for k, it in zip(mk, items)]
            todo = [i for i, f in enumerate(found) if f is None]
            computed = encode_items(thinker, modality, [items[i] for i in todo])
            for i, feats in zip(todo, computed):
                _atomic_save(feats, self.path_for(mk[i]), modality)
                found[i] = feats
            self.stats.hits += len(items) - len(todo)
            self.stats.misses += len(todo)
            out[modality] = tuple(found)
        return MediaFeatures(**{m: out.get(m, ()) for m in MODALITIES})
