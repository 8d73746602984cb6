"""Command line: `python -m avcot.pipeline {cavsr,avrt} --input FILE --out DIR [--config YAML]`,
`python -m avcot.pipeline ingest --videos DIR --out manifest.jsonl` (a media folder -> CAVSR input), and
`python -m avcot.pipeline split --manifest OUT/sft.jsonl --out OUT` (-> {train,val,test}.{jsonl,parquet})."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from avcot.pipeline.config import load_config


def parse_ingest_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m avcot.pipeline ingest", description=__doc__)
    ap.add_argument("--videos", type=Path, required=True, help="folder of videos/audio (searched recursively)")
    ap.add_argument("--out", type=Path, required=True, help="manifest to write (.jsonl); rejects beside it")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="longer files are cut into segments")
    ap.add_argument("--config", type=Path, default=None,
                    help="pipeline YAML whose asr_a (kind openai_asr) gives segment timestamps for cutting")
    return ap.parse_args(argv)


def ingest_main(argv: list[str]) -> int:
    """Build a manifest from a media folder; prints rows, rejects and warnings. 0, or 1 if nothing was usable."""
    from avcot.pipeline.config import RoleFactory
    from avcot.pipeline.ingest import ingest

    args = parse_ingest_args(argv)
    asr = None
    if args.config is not None:
        config = load_config(args.config)
        if config.role("asr_a").kind == "openai_asr":
            asr = RoleFactory(config).get("asr_a")
    report = ingest(args.videos, args.out, max_seconds=args.max_seconds, asr=asr)
    print(f"[ingest] files={report.files} rows={report.rows} rejected={len(report.rejects)} -> {args.out}")
    for r in report.rejects:
        print(f"  rejected {r['file']}: {r['reason']}", file=sys.stderr)
    for w in report.warnings:
        print(f"  warning: {w}", file=sys.stderr)
    return 0 if report.rows else 1


def parse_split_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m avcot.pipeline split", description=__doc__)
    ap.add_argument("--manifest", type=Path, required=True, help="manifest to split (a pipeline's sft/rl export)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for train/val/test.{jsonl,parquet} and split_rejects.jsonl (default: the manifest's)")
    ap.add_argument("--val", type=float, default=0.05, help="fraction of rows for val")
    ap.add_argument("--test", type=float, default=0.05, help="fraction of rows for test")
    ap.add_argument("--seed", type=int, default=0, help="which groups go where (same seed, same files)")
    ap.add_argument("--group-column", default=None,
                    help="column whose rows stay together (default: the source clip of the media path)")
    return ap.parse_args(argv)


def split_main(argv: list[str]) -> int:
    """Split a manifest by source clip; prints the counts and any rejects. 0, or 1 if no row had an id."""
    from avcot.pipeline.split import split_manifest

    args = parse_split_args(argv)
    out = args.out if args.out is not None else args.manifest.parent
    try:
        report = split_manifest(args.manifest, out, val=args.val, test=args.test, seed=args.seed,
                                group_column=args.group_column)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"split: {exc}") from exc
    print(f"[split] {report.line()} -> {out}")
    for r in report.rejects:
        print(f"  rejected {r['reason']}", file=sys.stderr)
    for name in ("val", "test"):
        if getattr(args, name) > 0 and not report.counts[name]:
            print(f"  warning: {name} is empty: {sum(report.groups.values())} source clip(s) cannot fill "
                  "train, val and test", file=sys.stderr)
    return 0 if sum(report.counts.values()) else 1


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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ingest"]:
        return ingest_main(argv[1:])
    if argv[:1] == ["split"]:
        return split_main(argv[1:])
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
