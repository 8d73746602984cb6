"""Learning-benchmark training step, CPU: the two speed changes of `configs/learn_cavsr.yaml`, each against its
stock counterpart in the same process.

    python bench/bench_train_towers.py --manifest runs/learn_cavsr/train.jsonl   # after learn_cavsr --stage data

1. fwd+bwd of one batch of 8 with `train_towers` (full fine-tuning, towers trainable): the stock HF loss
   (`fast_loss: false`) vs the label-only loss whose towers now run with gradients (`fast_loss: true`),
   interleaved, median of 5 after one warm-up round.
2. Decoding the same 48 clips a second time (epoch 2): `cache_examples: false` vs `true`.
Prints one JSON object; results go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from datamodules.cavsr import CavsrDataModule
from lit_modules.sft import SFTModule


def datamodule(manifest: str, cache: bool) -> CavsrDataModule:
    dm = CavsrDataModule(train_manifest=manifest, batch_size=8, val_fraction=0.0, split_column=None,
                         rejects_path="/dev/null", num_frames=4, frame_size=112, cache_examples=cache)
    dm.setup("fit")
    return dm


def decode_seconds(manifest: str, cache: bool, n: int = 48) -> float:
    """Seconds to build `n` examples a second time (the first pass fills the cache when it is on)."""
    ds = datamodule(manifest, cache).datasets["train"]
    [ds[i] for i in range(n)]
    t = time.perf_counter()
    [ds[i] for i in range(n)]
    return time.perf_counter() - t


def step_seconds(manifest: str, rounds: int = 6) -> dict[str, float]:
    """Median fwd+bwd seconds of the stock and the fast loss on one batch, towers trainable."""
    batch = next(iter(datamodule(manifest, False).train_dataloader()))
    modules = {}
    for fast in (False, True):
        modules[fast] = SFTModule(finetune="full", train_towers=True, fast_loss=fast, lr=1e-3)
        modules[fast].configure_model()
    times: dict[bool, list[float]] = {False: [], True: []}
    for it in range(rounds):
        for fast, module in modules.items():
            module.model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            module._compute_loss(batch).backward()
            if it:  # round 0 warms up
                times[fast].append(time.perf_counter() - t)
    return {"stock_s": statistics.median(times[False]), "fast_s": statistics.median(times[True])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="a learn_cavsr train.jsonl (at least 48 clips)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = step_seconds(args.manifest)
    res["step_speedup"] = res["stock_s"] / res["fast_s"]
    res["decode_uncached_s"] = decode_seconds(args.manifest, False)
    res["decode_cached_s"] = decode_seconds(args.manifest, True)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
