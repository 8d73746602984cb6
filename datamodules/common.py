"""The batch collate the DataModules hand their loaders (the rest of the manifest/media plumbing is in
`avcot.data`: rows, clips, examples, loader)."""
from __future__ import annotations

from collections.abc import Sequence

from avcot.chat import collate
from avcot.data.examples import Example, Skipped, SkippedBatch


def collate_examples(items: Sequence[Example | Skipped], pad_id: int, *, padding_side: str = "right",
                     hash_media: bool = False) -> dict | SkippedBatch:
    """`avcot.chat.collate` over the built items, ids in batch["ids"], skipped rows in batch["meta"]["skipped"].

    A batch whose rows were all skipped is a `SkippedBatch`. `hash_media`: also put the encoder-cache keys
    of the batch's media in batch["meta"]["media_keys"] (`avcot.thinker.encoder_cache.media_keys`), hashed
    here in the DataLoader worker, off the training path.
    """
    kept = [it for it in items if isinstance(it, Example)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not kept:
        return SkippedBatch(tuple(skipped))
    batch = collate([it.encoded for it in kept], pad_id, padding_side=padding_side)
    batch["ids"] = [it.id for it in kept]
    batch["meta"] = {"references": [it.reference for it in kept], "skipped": skipped}
    if hash_media:
        from avcot.thinker.encoder_cache import media_keys

        batch["meta"]["media_keys"] = media_keys(batch)
    return batch
