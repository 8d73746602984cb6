"""MCQ (AVRT) evaluation: greedy answers per modality condition, accuracy, format-valid rate, report.

Every item is asked once per requested condition through `avcot.data.mcq.McqTask` (the training path's row
checks, prompt and encoding; prompt-only, left-padded): "av" with all its streams, "a" with the video/image
dropped, "v" with the audio dropped.
The letter is parsed from the last <answer> tag; format validity is `avcot.rewards.format_reward`.
Difficulty (easy / medium / hard) is read from the manifest's `difficulty` column, which the AVRT data
pipeline fills from teacher correctness; public benchmarks have none ("unknown"). rejects.jsonl tags each
reject with its condition, and report.md counts rows in / scored / rejected per condition and the
clips cut at max_seconds (`avcot.eval.accounting`).
"""
from __future__ import annotations

import datetime as _dt
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from avcot.data.clips import MCQ_MEDIA, MediaSettings
from avcot.data.mcq import McqTask
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
from avcot.eval.metrics import MODALITIES, McqPrediction, score_mcq, summarize_mcq
from avcot.eval.report import ReportFiles, write_mcq_report
from avcot.eval.runner import (
    ModelSpec,
    ConditionRows,
    condition_rejects_path,
    condition_rows,
    generate_condition,
    load_eval_model,
    processor_source,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class McqEvalSettings:
    """What to evaluate on which data, and how."""

    data: str
    """MCQ manifest (JSONL/Parquet: id, question, options, answer, video/audio/image, difficulty)."""
    out: str
    """Output directory (report.md, metrics.json, predictions.jsonl, plots, rejects.jsonl)."""
    model: ModelSpec = ModelSpec()
    modalities: tuple[str, ...] = MODALITIES
    """Conditions: a (audio only), v (video/image only), av (both)."""
    batch_size: int = 4
    max_new_tokens: int = 512
    num_frames: int = MCQ_MEDIA.num_frames
    frame_size: int = MCQ_MEDIA.frame_size
    max_seconds: float = MCQ_MEDIA.max_seconds
    use_audio_in_video: bool = False
    progress: bool = True
    settings_from: str = ""
    """Where the media settings came from (flag / training_settings.json / default), for the report."""


@dataclass(frozen=True)
class McqEvalResult:
    """Predictions of every condition, where every row went, and the files written."""

    predictions: tuple[McqPrediction, ...]
    files: ReportFiles
    counts: tuple[ConditionCounts, ...] = ()
    rejects: tuple[EvalReject, ...] = ()
    truncated: tuple[TruncatedClip, ...] = ()


def parse_modalities(text: str | None) -> tuple[str, ...]:
    """'a,v,av' -> ('a', 'v', 'av'); empty -> all three."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    unknown = [n for n in names if n not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modality/modalities {unknown}; choose from {', '.join(MODALITIES)}")
    return tuple(dict.fromkeys(names)) or MODALITIES


def task_for(settings: McqEvalSettings, modality: str) -> McqTask:
    """The prompt-only MCQ task of one modality condition."""
    media = MediaSettings(num_frames=settings.num_frames, frame_size=settings.frame_size,
                          max_seconds=settings.max_seconds)
    return McqTask(target="none", modality=modality, media=media, use_audio_in_video=settings.use_audio_in_video)


def read_condition(settings: McqEvalSettings, modality: str, processor, rejects: RejectLog) -> ConditionRows:
    """The manifest's items under one modality condition, checked, with their prompt-only examples."""
    return condition_rows(task_for(settings, modality), settings.data, processor, rejects)


def evaluate_modality(model, processor, settings: McqEvalSettings, modality: str) -> ConditionOutcome[McqPrediction]:
    """Generate and score every item under one modality condition; count where each row went."""
    partial = condition_rejects_path(settings.out, modality)
    partial.unlink(missing_ok=True)
    reject_log = RejectLog(partial)
    data = read_condition(settings, modality, processor, reject_log)
    difficulty = {str(r["id"]): r.get("difficulty") for r in data.rows}
    preds = []
    for gen in generate_condition(model, processor, data, batch_size=settings.batch_size, rejects=reject_log,
                                  max_new_tokens=settings.max_new_tokens, desc=f"mcq/{modality}",
                                  progress=settings.progress):
        for rid, gold, text in zip(gen.ids, gen.references, gen.texts):
            preds.append(score_mcq(rid, modality, gold, text, difficulty=difficulty.get(rid)))
    rejects = read_rejects(partial, modality)
    partial.unlink(missing_ok=True)
    return ConditionOutcome(tuple(preds), tuple(rejects), condition_counts(modality, data.rows_in, len(preds),
                                                                           rejects), data.rows)


def truncated_items(settings: McqEvalSettings, rows: Sequence[dict]) -> tuple[TruncatedClip, ...]:
    """Items whose audio or video goes on past max_seconds."""
    from avcot.data.mcq import item_from_row
    from avcot.manifest import manifest_source

    base = manifest_source(settings.data).parent
    found = []
    for row in first_rows(rows):
        item = item_from_row(row, base)
        note = clip_truncations(item.id, audio=item.audio or item.video, video=item.video,
                                max_seconds=settings.max_seconds)
        if note is not None:
            found.append(note)
    return tuple(found)


def run_mcq(settings: McqEvalSettings) -> McqEvalResult:
    """Evaluate `settings.model` on `settings.data` under every modality condition and write the report."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    from avcot.processor import load_processor

    (out / "rejects.jsonl").unlink(missing_ok=True)  # a run that stops half-way leaves no earlier run's rejects
    model = load_eval_model(settings.model)
    processor = load_processor(processor_source(settings.model))
    outcomes = [evaluate_modality(model, processor, settings, m) for m in settings.modalities]
    preds = [p for o in outcomes for p in o.predictions]
    rejects = [r for o in outcomes for r in o.rejects]
    write_rejects(out / "rejects.jsonl", rejects)  # this run's rejects only, each with its condition
    counts = tuple(o.counts for o in outcomes)
    truncated = truncated_items(settings, [r for o in outcomes for r in o.rows])
    summary = summarize_mcq(preds)
    log.info("MCQ accuracy %.4f (n=%d), format-valid %.4f", summary.overall.accuracy, summary.overall.n,
             summary.overall.format_valid_rate)
    run = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
           "data": settings.data, "ckpt": settings.model.ckpt or "none", "base": settings.model.base,
           "modalities": ",".join(settings.modalities), "num_frames": settings.num_frames,
           "frame_size": settings.frame_size, "max_seconds": settings.max_seconds,
           "use_audio_in_video": settings.use_audio_in_video,
           **({"settings_from": settings.settings_from} if settings.settings_from else {})}
    files = write_mcq_report(out, preds, summary, run, counts=counts, truncated=truncated)
    return McqEvalResult(tuple(preds), files, counts, tuple(rejects), truncated)
