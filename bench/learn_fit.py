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


def settings_argv(settings) -> list[str]:
    """A benchmark settings dataclass as the command-line flags that rebuild it (`field_name` -> `--field-name
    VALUE`; a bool -> `--field-name` / `--no-field-name`), for running one stage of the benchmark in a child
    process."""
    from dataclasses import asdict

    args: list[str] = []
    for name, value in asdict(settings).items():
        flag = name.replace("_", "-")
        args += [f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
    return args


def start_job(argv: list[str], log: Path):
    """Start `argv` as a child process writing stdout and stderr to `log`; (the process, the open log file)."""
    import subprocess

    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "w", encoding="utf-8")
    return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT), handle


def finish_job(job, log: Path, result: Path) -> dict:
    """Wait for a `start_job` child and return the JSON it wrote to `result`; RuntimeError with the tail of its
    log if it failed or wrote nothing."""
    import json

    proc, handle = job
    code = proc.wait()
    handle.close()
    if code == 0 and result.is_file():
        return json.loads(result.read_text(encoding="utf-8"))
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
    raise RuntimeError(f"the child run {' '.join(map(str, proc.args[1:4]))} ... failed (exit {code}, "
                       f"{'no ' + str(result) if code == 0 else 'see ' + str(log)}):\n{tail}")
