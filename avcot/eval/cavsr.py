"""CAVSR evaluation: greedy transcription per video condition, corpus CER, report.

For every requested condition the manifest goes through `avcot.data.cavsr.CavsrTask` (so the row checks,
prompt, media decoding and encoding are exactly the training path), batches are left-padded, and the model
generates greedily. Conditions follow the VASR paper's ablations:

- true        the clip's own video
- black       all-zero frames (same shape, so the token count matches "true")
- random      another clip's video (chosen per clip id and seed, never its own)
- audio_only  no video at all (no video tokens in the prompt)

"w/o AV-CoT" is not a condition here but a separate adapter trained with the DataModule's
`target="transcript"`; evaluate it with `--prompt transcript` (the plain instruction it was trained on).
Its plain output is scored the same way: `extract_transcription` falls back to the last non-empty line.

Scoring is "avcot" (this package's normalised tokens) or "wenet" (wenet compute-cer.py --char=1 tokens,
for figures comparable with papers scored by it); report.md names the one used. Every condition's
rejects land in rejects.jsonl with their condition, and report.md counts rows in / scored / rejected
per condition and the clips cut at max_seconds (`avcot.eval.accounting`).
"""
from __future__ import annotations

import datetime as _dt
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from avcot.data.cavsr import CavsrTask
from avcot.data.clips import CAVSR_MEDIA, MediaSettings
from avcot.data.rows import RejectLog
from avcot.eval.accounting import (
    ConditionCounts,
    ConditionOutcome,
    EvalReject,
    TruncatedClip,
    clip_truncations,
    condition_counts,
    first_rows,
    read_rejects,
    write_rejects,
)
from avcot.eval.metrics import ABLATIONS, CavsrPrediction, cer_by_ablation, cer_by_cue, score_cavsr
from avcot.eval.report import ReportFiles, write_cavsr_report
from avcot.eval.runner import (
    ModelSpec,
    ConditionRows,
    condition_rejects_path,
    condition_rows,
    generate_condition,
    load_eval_model,
    processor_source,
)
from avcot.text import Scoring

log = logging.getLogger(__name__)

VIDEO_MODE = {"true": "true", "black": "black", "random": "random", "audio_only": "none"}
"""Eval condition -> `MediaSettings.video`."""


@dataclass(frozen=True)
class CavsrEvalSettings:
    """What to evaluate on which data, and how."""

    data: str
    """CAVSR manifest (JSONL/Parquet: id, video, audio, text, cue, ...)."""
    out: str
    """Output directory (report.md, metrics.json, predictions.jsonl, plots, rejects.jsonl)."""
    model: ModelSpec = ModelSpec()
    ablations: tuple[str, ...] = ("black", "random", "audio_only")
    """Conditions besides the true video (which is always evaluated first)."""
    prompt: Literal["avcot", "transcript"] = "avcot"
    """Instruction: 'avcot' (AV-CoT trace) or 'transcript' (plain, for a w/o-AV-CoT adapter)."""
    batch_size: int = 4
    max_new_tokens: int = 384
    num_frames: int = CAVSR_MEDIA.num_frames
    frame_size: int = CAVSR_MEDIA.frame_size
    max_seconds: float = CAVSR_MEDIA.max_seconds
    use_audio_in_video: bool = False
    t2s: bool = False
    """Convert traditional to simplified characters before scoring."""
    scoring: Scoring = "avcot"
    """CER tokens: 'avcot' (normalised: punctuation, width, case folded) or 'wenet' (compute-cer.py --char=1)."""
    seed: int = 0
    """Seed of the random-video partner choice."""
    worst_k: int = 10
    progress: bool = True
    settings_from: str = ""
    """Where the media settings came from (flag / training_settings.json / default), for the report."""


@dataclass(frozen=True)
class CavsrEvalResult:
    """Predictions of every condition, where every row went, and the files written."""

    predictions: tuple[CavsrPrediction, ...]
    files: ReportFiles
    counts: tuple[ConditionCounts, ...] = ()
    rejects: tuple[EvalReject, ...] = ()
    truncated: tuple[TruncatedClip, ...] = ()


def parse_ablations(text: str | None) -> tuple[str, ...]:
    """'black,random,audio_only' -> conditions in the order given; 'true' is implied and dropped."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; choose from {', '.join(ABLATIONS[1:])}")
    return tuple(dict.fromkeys(n for n in names if n != "true"))


def conditions(settings: CavsrEvalSettings) -> tuple[str, ...]:
    """True video first, then the requested ablations."""
    return ("true",) + tuple(a for a in settings.ablations if a != "true")


def task_for(settings: CavsrEvalSettings, condition: str) -> CavsrTask:
    """The CAVSR task of one condition: the settings' prompt and media, the condition's video."""
    media = MediaSettings(num_frames=settings.num_frames, frame_size=settings.frame_size,
                          max_seconds=settings.max_seconds, video=VIDEO_MODE[condition])
    return CavsrTask(target=settings.prompt, media=media, use_audio_in_video=settings.use_audio_in_video,
                     seed=settings.seed)


def read_condition(settings: CavsrEvalSettings, condition: str, processor, rejects: RejectLog) -> ConditionRows:
    """The manifest's rows under one condition, checked, with their prompt-only examples."""
    return condition_rows(task_for(settings, condition), settings.data, processor, rejects)


def evaluate_condition(model, processor, settings: CavsrEvalSettings,
                       condition: str) -> ConditionOutcome[CavsrPrediction]:
    """Generate and score every clip of the manifest under one condition; count where each row went."""
    partial = condition_rejects_path(settings.out, condition)
    partial.unlink(missing_ok=True)
    reject_log = RejectLog(partial)
    data = read_condition(settings, condition, processor, reject_log)
    cues = {str(r["id"]): str(r.get("cue") or "") for r in data.rows}
    preds = []
    for gen in generate_condition(model, processor, data, batch_size=settings.batch_size, rejects=reject_log,
                                  max_new_tokens=settings.max_new_tokens, desc=f"cavsr/{condition}",
                                  progress=settings.progress):
        for rid, ref, text in zip(gen.ids, gen.references, gen.texts):
            preds.append(score_cavsr(rid, condition, ref, text, cue=cues.get(rid, ""), t2s=settings.t2s,
                                     scoring=settings.scoring))
    rejects = read_rejects(partial, condition)
    partial.unlink(missing_ok=True)
    return ConditionOutcome(tuple(preds), tuple(rejects), condition_counts(condition, data.rows_in, len(preds),
                                                                           rejects), data.rows)


def truncated_clips(settings: CavsrEvalSettings, rows: Sequence[dict]) -> tuple[TruncatedClip, ...]:
    """Clips of `rows` whose audio or video goes on past max_seconds."""
    from avcot.data.cavsr import clip_from_row
    from avcot.manifest import manifest_source

    base = manifest_source(settings.data).parent
    found = []
    for row in first_rows(rows):
        clip = clip_from_row(row, base)  # the true-video condition always runs: the video counts too
        note = clip_truncations(clip.id, audio=clip.audio or clip.video, video=clip.video,
                                max_seconds=settings.max_seconds)
        if note is not None:
            found.append(note)
    return tuple(found)


def run_info(settings: CavsrEvalSettings) -> dict:
    """Run description for report.md / metrics.json."""
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
            "data": settings.data, "ckpt": settings.model.ckpt or "none", "base": settings.model.base,
            "prompt": settings.prompt, "conditions": ",".join(conditions(settings)), "scoring": settings.scoring,
            "t2s": settings.t2s, "num_frames": settings.num_frames, "frame_size": settings.frame_size,
            "max_seconds": settings.max_seconds, "use_audio_in_video": settings.use_audio_in_video,
            **({"settings_from": settings.settings_from} if settings.settings_from else {})}


def run_cavsr(settings: CavsrEvalSettings) -> CavsrEvalResult:
    """Evaluate `settings.model` on `settings.data` under every condition and write the report."""
    from avcot.processor import load_processor

    return evaluate_model(load_eval_model(settings.model), load_processor(processor_source(settings.model)), settings)


def evaluate_model(model, processor, settings: CavsrEvalSettings) -> CavsrEvalResult:
    """Evaluate an already loaded `model` (eval mode, on its device) on `settings.data` under every condition
    and write the report; `settings.model` only describes it in the report (e.g. a model still in training)."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rejects.jsonl").unlink(missing_ok=True)  # a run that stops half-way leaves no earlier run's rejects
    outcomes = [evaluate_condition(model, processor, settings, c) for c in conditions(settings)]
    preds = [p for o in outcomes for p in o.predictions]
    rejects = [r for o in outcomes for r in o.rejects]
    write_rejects(out / "rejects.jsonl", rejects)  # this run's rejects only, each with its condition
    for o in outcomes:
        if not o.predictions:
            log.warning("condition %s: no clip could be evaluated (see %s)", o.counts.condition, out / "rejects.jsonl")
    truncated = truncated_clips(settings, [r for o in outcomes for r in o.rows])
    by_ablation = cer_by_ablation(preds)
    for s in by_ablation:
        log.info("CER %-10s %s (n=%d, S/D/I %d/%d/%d, empty refs %d)", s.name,
                 "n/a" if s.cer is None else f"{s.cer:.4f}", s.n, s.substitutions, s.deletions, s.insertions,
                 s.empty_refs)
    counts = tuple(o.counts for o in outcomes)
    files = write_cavsr_report(out, preds, by_ablation, cer_by_cue(preds), run_info(settings),
                               worst_k=settings.worst_k, scoring=settings.scoring, counts=counts,
                               truncated=truncated)
    return CavsrEvalResult(tuple(preds), files, counts, tuple(rejects), truncated)
