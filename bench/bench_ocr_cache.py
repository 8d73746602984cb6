"""The OCR visual teacher's frame cache against stock per-call OCR, in the same process (CPU).

    python bench/bench_ocr_cache.py                 # 12 synthetic pictures, each read 3 times
    python bench/bench_ocr_cache.py --clips 24 --reads 5

An AVRT set asks several questions of one clip, so `RapidOcr` sees the same frames again; it keeps the engine's
result per distinct frame (an LRU of `RapidOcr.CACHE_FRAMES`). Stock = the same class with the cache off (every
read runs the engine, as rapidocr is called out of the box). Both read the same synthetic pictures (avcot.synth
contents with on-screen text, rendered at 224x224) `--reads` times each, after one warm-up read; the boxes of the
two must be identical. Prints one JSON object; results go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the checkout
    sys.path.insert(0, str(ROOT))


def pictures(n: int, size: int = 224) -> list[np.ndarray]:
    """The first `n` text-showing synthetic pictures, each as a uint8 [1, H, W, 3] clip of one frame."""
    from avcot.synth import all_contents
    from avcot.synth_media import render_frames

    specs = all_contents(1, 0, ("background", "subtitle", "scene"))[:n]
    return [np.asarray(render_frames(s, (size, size), 1)[0], dtype=np.uint8)[None] for s in specs]


def read_all(ocr, clips: list[np.ndarray], reads: int) -> tuple[float, list]:
    """(seconds, boxes of every read): each clip read `reads` times in a row, as a clip's questions are."""
    t0, boxes = time.perf_counter(), []
    for clip in clips:
        for _ in range(reads):
            boxes.append(ocr.read(clip))
    return time.perf_counter() - t0, boxes


def measure(n_clips: int, reads: int) -> dict:
    """Stock (cache off) and cached seconds on the same pictures, and whether their boxes agree."""
    from avcot.pipeline.local import RapidOcr

    clips = pictures(n_clips)
    stock, cached = RapidOcr(), RapidOcr()
    stock.CACHE_FRAMES = 0  # an instance attribute: every read runs the engine (the stock behaviour)
    for ocr in (stock, cached):
        ocr.read(clips[0][:, ::2, ::2].copy())  # warm-up on a picture that is not measured
    stock_s, stock_boxes = read_all(stock, clips, reads)
    cached_s, cached_boxes = read_all(cached, clips, reads)
    if stock_boxes != cached_boxes:
        raise SystemExit("the cached OCR returned other boxes than the stock OCR: the cache is wrong")
    return {"clips": len(clips), "reads_per_clip": reads, "stock_s": round(stock_s, 3),
            "cached_s": round(cached_s, 3), "speedup": round(stock_s / cached_s, 2),
            "boxes_identical": True, "machine": f"{platform.node()} {platform.machine()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--clips", type=int, default=12, help="distinct synthetic pictures")
    ap.add_argument("--reads", type=int, default=3, help="reads of each picture (questions per clip)")
    args = ap.parse_args(argv)
    if args.clips < 1 or args.reads < 1:
        ap.error("--clips and --reads must be at least 1")
    print(json.dumps(measure(args.clips, args.reads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
