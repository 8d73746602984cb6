"""MCQ (AVRT) evaluation: greedy answers per modality condition, accuracy, format-valid rate, report.

Every item is asked once per requested condition through `datamodules.mcq.McqDataModule` (prompt-only,
left-padded): "av" with all its streams, "a" with the video/image dropped, "v" with the audio dropped.
The letter is parsed from the last <answer> tag; format validity is `avcot.rewards.format_reward`.
Difficulty (easy / medium / hard) is read from the manifest's `difficulty` column, which the AVRT data
pipeline fills from teacher correctness; public benchmarks have none ("unknown").
"""
from __future__ import annotations

import datetime as _dt
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

from avcot.eval.metrics import MODALITIES, McqPrediction, score_mcq, summarize_mcq
from avcot.eval.report import ReportFiles, write_mcq_report
from avcot.eval.runner import ModelSpec, generate_loader, load_eval_model, processor_source

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
    num_frames: int = 8
    frame_size: int = 112
    max_seconds: float = 30.0
    use_audio_in_video: bool = False
    progress: bool = True


@dataclass(frozen=True)
class McqEvalResult:
    """Predictions of every condition and the files written."""

    predictions: tuple[McqPrediction, ...]
    files: ReportFiles


def parse_modalities(text: str | None) -> tuple[str, ...]:
    """'a,v,av' -> ('a', 'v', 'av'); empty -> all three."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    unknown = [n for n in names if n not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modality/modalities {unknown}; choose from {', '.join(MODALITIES)}")
    return tuple(dict.fromkeys(names)) or MODALITIES


def datamodule_for(settings: McqEvalSettings, modality: str):
    """A predict-ready McqDataModule for one modality condition."""
    from datamodules.mcq import McqDataModule

    dm = McqDataModule(
        test_manifest=settings.data, processor=processor_source(settings.model), target="none", modality=modality,
        eval_batch_size=settings.batch_size, num_frames=settings.num_frames, frame_size=settings.frame_size,
        max_seconds=settings.max_seconds, use_audio_in_video=settings.use_audio_in_video, on_bad_row="skip",
        rejects_path=str(Path(settings.out) / "rejects.jsonl"),
    )
    dm.setup("predict")
    return dm


def evaluate_modality(model, settings: McqEvalSettings, modality: str) -> list[McqPrediction]:
    """Generate and score every item under one modality condition."""
    dm = datamodule_for(settings, modality)
    difficulty = {str(r["id"]): r.get("difficulty") for r in dm.datasets["predict"].rows}
    preds = []
    for gen in generate_loader(model, dm.processor, dm.predict_dataloader(), max_new_tokens=settings.max_new_tokens,
                               desc=f"mcq/{modality}", progress=settings.progress):
        for rid, gold, text in zip(gen.ids, gen.references, gen.texts):
            preds.append(score_mcq(rid, modality, gold, text, difficulty=difficulty.get(rid)))
    return preds


def run_mcq(settings: McqEvalSettings) -> McqEvalResult:
    """Evaluate `settings.model` on `settings.data` under every modality condition and write the report."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rejects.jsonl").unlink(missing_ok=True)
    model = load_eval_model(settings.model)
    preds: list[McqPrediction] = []
    for modality in settings.modalities:
        preds.extend(evaluate_modality(model, settings, modality))
    summary = summarize_mcq(preds)
    log.info("MCQ accuracy %.4f (n=%d), format-valid %.4f", summary.overall.accuracy, summary.overall.n,
             summary.overall.format_valid_rate)
    run = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
           "data": settings.data, "ckpt": settings.model.ckpt or "none", "base": settings.model.base,
           "modalities": ",".join(settings.modalities), "num_frames": settings.num_frames}
    return McqEvalResult(tuple(preds), write_mcq_report(out, preds, summary, run))
