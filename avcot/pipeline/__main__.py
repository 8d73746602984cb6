"""Command line: `python -m avcot.pipeline {cavsr,avrt} --input FILE --out DIR [--config YAML]`."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from avcot.pipeline.config import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m avcot.pipeline", description=__doc__)
    ap.add_argument("command", choices=("cavsr", "avrt"), help="which pipeline to run")
    ap.add_argument("--input", type=Path, required=True, help="input rows (.jsonl or .parquet)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (reruns resume here)")
    ap.add_argument("--config", type=Path, default=None, help="pipeline YAML (default: all offline rules)")
    ap.add_argument("--executor", choices=("local", "ray"), default=None, help="override config.executor")
    ap.add_argument("--shard-size", type=int, default=None, help="override config.shard_size")
    ap.add_argument("--concurrency", type=int, default=None, help="override config.concurrency")
    ap.add_argument("--limit", type=int, default=None, help="only the first N input rows")
    ap.add_argument("--no-progress", action="store_true", help="hide the per-stage progress bars")
    return ap.parse_args(argv)


EXIT_STALLED = 3
"""Exit status when a stage got no answer for any row it tried (endpoint down, every call timed out)."""


def main(argv: list[str] | None = None) -> int:
    """Run one pipeline; prints the counts line (and a summary of pending rows).

    Returns 0, or EXIT_STALLED when some stage had every row it tried fail for a transient reason;
    other errors exit non-zero with a message. Rows that failed transiently are never stored, so
    rerunning the same command retries exactly them.
    """
    args = parse_args(argv)
    config = load_config(args.config)
    overrides = {k: v for k, v in (("executor", args.executor), ("shard_size", args.shard_size),
                                   ("concurrency", args.concurrency)) if v is not None}
    if args.no_progress:
        overrides["progress"] = False
    config = dataclasses.replace(config, **overrides)
    if config.shard_size < 1 or config.concurrency < 1:
        raise SystemExit("shard_size and concurrency must be >= 1")
    from avcot.pipeline import run_avrt, run_cavsr

    run = run_cavsr if args.command == "cavsr" else run_avrt
    counts = run(args.input, args.out, config, limit=args.limit)
    print(f"[{args.command}] {counts.line()} -> {args.out}")
    for name, tally in counts.stages.items():
        print(f"  {name:>15}: in={tally['in']} kept={tally['kept']} filtered={tally['filtered']} "
              f"rejected={tally['rejected']} failed={tally['failed']}")
    if counts.failed:
        print(f"[{args.command}] {counts.summary()} Details: {args.out / 'failed.jsonl'}", file=sys.stderr)
    return EXIT_STALLED if counts.stalled else 0


if __name__ == "__main__":
    sys.exit(main())
