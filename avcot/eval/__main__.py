"""`python -m avcot.eval {cavsr,mcq,convert} ...`: the command registry of the eval package.

  python -m avcot.eval cavsr --ckpt ADAPTER_OR_CKPT --data MANIFEST --out DIR [--base tiny|PATH]
                             [--ablations black,random,audio_only] [--prompt avcot|transcript]
                             [--scoring avcot|wenet] [--config YAML]
  python -m avcot.eval mcq   --ckpt ADAPTER_OR_CKPT --data MANIFEST --out DIR [--modalities a,v,av]
  python -m avcot.eval convert --benchmark omnibench --src dataset/batch-5_1142_20240817.jsonl --out m.jsonl

Media settings (--num-frames, --frame-size, --max-seconds, --use-audio-in-video; cavsr's --prompt from the
training target): a flag given on the command line wins; else the value the checkpoint was trained with, read
from the `training_settings.json` inside or beside `--ckpt`; else the default. The log and report.md say which.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from avcot.cli_help import DefaultsHelpFormatter
from avcot.data.clips import CAVSR_MEDIA, MCQ_MEDIA, MediaSettings
from avcot.eval.loaders import BENCHMARKS
from avcot.text import SCORINGS

log = logging.getLogger("avcot.eval")


def _defaults(media: MediaSettings) -> dict:
    return {"frame_size": media.frame_size, "max_seconds": media.max_seconds, "use_audio_in_video": False,
            "num_frames": media.num_frames}


# Media settings when neither a flag nor the checkpoint's training_settings.json gives them: each task's one
# default (`avcot.data.clips`), the same as its DataModule's and the demo's.
CAVSR_DEFAULTS = {**_defaults(CAVSR_MEDIA), "prompt": "avcot"}
MCQ_DEFAULTS = _defaults(MCQ_MEDIA)


def _model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", default=None,
                    help="YAML of this command's flags (names as in --help, '-' or '_'); flags given here win")
    ap.add_argument("--ckpt", default=None, help="PEFT adapter dir, full checkpoint dir, or 'none' (base model only)")
    ap.add_argument("--base", default="tiny", help="base model: 'tiny' (embedded, random init) or a checkpoint dir")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weights dtype")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    ap.add_argument("--seed", type=int, default=0, help="tiny model init seed / random-video partner seed")
    ap.add_argument("--data", required=True, help="manifest (JSONL or Parquet)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--batch-size", type=int, default=4, help="generation batch size (left-padded)")
    ap.add_argument("--frame-size", type=int, default=None,
                    help="square frame side, multiple of 28 (default: as trained, else 112)")
    ap.add_argument("--max-seconds", type=float, default=None, help="clip length cap (default: as trained, else 30)")
    ap.add_argument("--use-audio-in-video", action=argparse.BooleanOptionalAction, default=None,
                    help="interleave audio with video frames (default: as trained, else off)")
    ap.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m avcot.eval", description=__doc__.splitlines()[0],
                                 formatter_class=DefaultsHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    cav = sub.add_parser("cavsr", help="CER of transcriptions under video ablations",
                         formatter_class=DefaultsHelpFormatter)
    _model_args(cav)
    cav.add_argument("--ablations", default="black,random,audio_only",
                     help="comma list besides the true video: black, random, audio_only ('' = true video only)")
    cav.add_argument("--prompt", default=None, choices=("avcot", "transcript"),
                     help="instruction: avcot, or transcript for a w/o-AV-CoT adapter (default: the training "
                          "target, else avcot)")
    cav.add_argument("--max-new-tokens", type=int, default=384, help="generation length cap per clip")
    cav.add_argument("--num-frames", type=int, default=None, help="frames per clip, even (default: as trained, else 4)")
    cav.add_argument("--t2s", action="store_true", help="traditional -> simplified before scoring")
    cav.add_argument("--scoring", default="avcot", choices=SCORINGS,
                     help="CER tokens: avcot (punctuation/width/case folded) or wenet (compute-cer.py --char=1)")
    cav.add_argument("--worst-k", type=int, default=10, help="rows in the worst-samples table")
    mcq = sub.add_parser("mcq", help="accuracy per modality / difficulty, format-valid rate",
                         formatter_class=DefaultsHelpFormatter)
    _model_args(mcq)
    mcq.add_argument("--modalities", default="a,v,av", help="comma list of a, v, av")
    mcq.add_argument("--max-new-tokens", type=int, default=512, help="generation length cap per question")
    mcq.add_argument("--num-frames", type=int, default=None, help="frames per clip, even (default: as trained, else 8)")
    conv = sub.add_parser("convert", help="public benchmark release -> our manifest JSONL",
                          formatter_class=DefaultsHelpFormatter)
    conv.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    conv.add_argument("--src", required=True, help="the benchmark's annotation file (csv / json / jsonl)")
    conv.add_argument("--out", required=True, help="manifest JSONL to write (rejects beside it)")
    conv.add_argument("--root", default=None, help="dataset root the media paths are relative to")
    return ap


def apply_config(ap: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make the values of `--config FILE` the defaults of the chosen subcommand, so command-line flags win.

    A key that is not one of the subcommand's flags, or a value its flag refuses, stops with a message
    naming the file and the key. A list value (ablations, modalities) is joined with commas.
    """
    import yaml

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    path = pre.parse_known_args(argv)[0].config
    sub = next((a for a in ap._actions if isinstance(a, argparse._SubParsersAction)), None)
    command = next((a for a in argv if sub is not None and a in sub.choices), None)
    if path is None or command is None:
        return
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"--config {path}: cannot read it: {exc}") from exc
    if not isinstance(values, dict):
        raise SystemExit(f"--config {path}: expected a mapping of flag names to values")
    actions = {a.dest: a for a in sub.choices[command]._actions if a.dest not in ("help", "config")}
    for key, value in values.items():
        action = actions.get(str(key).lstrip("-").replace("-", "_"))
        if action is None:
            raise SystemExit(f"--config {path}: {key!r} is not a flag of 'avcot.eval {command}' "
                             f"(known: {', '.join(sorted(actions))})")
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if action.type is not None and value is not None:
            try:
                value = action.type(value)
            except (TypeError, ValueError) as exc:
                raise SystemExit(f"--config {path}: {key}: {exc}") from exc
        if action.choices is not None and value not in action.choices:
            raise SystemExit(f"--config {path}: {key}: {value!r} is not one of {list(action.choices)}")
        action.default, action.required = value, False


def _spec(args):
    from avcot.eval.runner import ModelSpec

    return ModelSpec(ckpt=args.ckpt, base=args.base, dtype=args.dtype, device=args.device, seed=args.seed)


def media_settings(args: argparse.Namespace, defaults: dict) -> tuple[dict, str]:
    """The media settings to evaluate with (flag > training_settings.json of --ckpt > default) and a line
    saying where each came from, for the log and the report."""
    from avcot.training_settings import merge_media, read_training_settings

    saved = read_training_settings(args.ckpt) if args.ckpt and Path(args.ckpt).expanduser().is_dir() else None
    recorded = saved.known() if saved is not None else {}
    if recorded.get("target") in ("avcot", "transcript"):  # a CAVSR training target is the eval prompt
        recorded["prompt"] = recorded["target"]
    values, sources = merge_media({k: getattr(args, k) for k in defaults}, recorded, defaults)
    where = ", ".join(f"{k}={values[k]} ({sources[k]})" for k in defaults)
    if args.ckpt and saved is None:
        where += f"; no training_settings.json in or beside {args.ckpt}"
    return values, where


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    apply_config(parser, argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "convert":
        from avcot.eval.loaders import convert

        loaded = convert(args.benchmark, args.src, args.out, root=args.root)
        print(f"{args.out}: {len(loaded.records)} rows, {len(loaded.rejects)} rejected")
        return 0
    media, where = media_settings(args, CAVSR_DEFAULTS if args.command == "cavsr" else MCQ_DEFAULTS)
    log.info("media settings: %s", where)
    if args.command == "cavsr":
        from avcot.eval.cavsr import CavsrEvalSettings, parse_ablations, run_cavsr

        result = run_cavsr(CavsrEvalSettings(
            data=args.data, out=args.out, model=_spec(args), ablations=parse_ablations(args.ablations),
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, t2s=args.t2s, scoring=args.scoring,
            seed=args.seed, worst_k=args.worst_k, progress=not args.no_progress, settings_from=where, **media))
    else:
        from avcot.eval.mcq import McqEvalSettings, parse_modalities, run_mcq

        result = run_mcq(McqEvalSettings(
            data=args.data, out=args.out, model=_spec(args), modalities=parse_modalities(args.modalities),
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=not args.no_progress,
            settings_from=where, **media))
    print(f"report: {result.files.report}")
    return 0


if __name__ == "__main__":
    from avcot.cli_errors import run_command  # a bad checkpoint ends with one line, not a traceback
    sys.exit(run_command(main))
