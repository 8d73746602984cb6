"""Running `avcot.cli fit` from the learning benchmarks: the arguments every stage shares, and one fit in-process."""
from __future__ import annotations

import time
from pathlib import Path


def common_args(settings, config: str, root: Path, steps: int) -> list[str]:
    """`avcot.cli fit` arguments every training stage shares: recipe, seeds, run directory, budget, device,
    generation cap and the frames. `settings` is a benchmark's settings (seed, device, max_new_tokens,
    num_frames, frame_size)."""
    return ["fit", "--config", config, "--seed_everything", str(settings.seed),
            "--trainer.default_root_dir", str(root), "--trainer.max_steps", str(steps),
            "--trainer.accelerator", "cpu" if settings.device == "cpu" else "gpu",
            "--model.init_args.seed", str(settings.seed),
            "--model.init_args.max_new_tokens", str(settings.max_new_tokens),
            "--data.init_args.seed", str(settings.seed),
            "--data.init_args.num_frames", str(settings.num_frames),
            "--data.init_args.frame_size", str(settings.frame_size)]


def fit(args: list[str], written: Path) -> float:
    """One `avcot.cli fit` run in this process; its seconds. RuntimeError if `written` is not there after it."""
    from avcot.cli import main as cli_main

    t0 = time.monotonic()
    cli_main(args)
    if not written.exists():
        raise RuntimeError(f"avcot.cli {' '.join(args[:3])} wrote no {written}")
    return round(time.monotonic() - t0, 1)
