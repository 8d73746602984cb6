"""CAVSR evaluation: greedy transcription per video condition, corpus CER, report.

For every requested condition the manifest goes through `datamodules.cavsr.CavsrDataModule` (so the
prompt, media decoding and encoding are exactly the training path), predict batches are left-padded,
and the model generates greedily. Conditions follow the VASR paper's ablations:

- true        the clip's own video
- black       all-zero frames (same shape, so the token count matches "true")
- random      another clip's video (chosen per clip id and seed, never its own)
- audio_only  no video at all (no video tokens in the prompt)

"w/o AV-CoT" is not a condition here but a separate adapter trained with the DataModule's
`target="transcript"`; evaluate it with `--prompt transcript` (the plain instruction it was trained on).
Its plain output is scored the same way: `extract_transcription` falls back to the last non-empty line.
"""
from __future__ import annotations

import datetime as _dt
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from avcot.eval.metrics import ABLATIONS, CavsrPrediction, cer_by_ablation, cer_by_cue, score_cavsr
from avcot.eval.report import ReportFiles, write_cavsr_report
from avcot.eval.runner import ModelSpec, generate_loader, load_eval_model, processor_source

log = logging.getLogger(__name__)

VIDEO_MODE = {"true": "true", "black": "black", "random": "random", "audio_only": "none"}
"""Eval condition -> CavsrDataModule `video` setting."""


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
    max_new_tokens: int = 256
    num_frames: int = 4
    frame_size: int = 112
    max_seconds: float = 30.0
    use_audio_in_video: bool = False
    t2s: bool = False
    """Convert traditional to simplified characters before scoring."""
    seed: int = 0
    """Seed of the random-video partner choice."""
    worst_k: int = 10
    progress: bool = True


@dataclass(frozen=True)
class CavsrEvalResult:
    """Predictions of every condition and the files written."""

    predictions: tuple[CavsrPrediction, ...]
    files: ReportFiles


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


def datamodule_for(settings: CavsrEvalSettings, condition: str):
    """A predict-ready CavsrDataModule for one condition (rejects appended to <out>/rejects.jsonl)."""
    from datamodules.cavsr import CavsrDataModule

    dm = CavsrDataModule(
        predict_manifest=settings.data, processor=processor_source(settings.model), target=settings.prompt,
        seed=settings.seed, eval_batch_size=settings.batch_size, num_frames=settings.num_frames,
        frame_size=settings.frame_size, max_seconds=settings.max_seconds, video=VIDEO_MODE[condition],
        use_audio_in_video=settings.use_audio_in_video, on_bad_row="skip",
        rejects_path=str(Path(settings.out) / "rejects.jsonl"),
    )
    dm.setup("predict")
    return dm


def evaluate_condition(model, settings: CavsrEvalSettings, condition: str) -> list[CavsrPrediction]:
    """Generate and score every clip of the manifest under one condition."""
    dm = datamodule_for(settings, condition)
    cues = {str(r["id"]): str(r.get("cue") or "") for r in dm.datasets["predict"].rows}
    preds = []
    for gen in generate_loader(model, dm.processor, dm.predict_dataloader(), max_new_tokens=settings.max_new_tokens,
                               desc=f"cavsr/{condition}", progress=settings.progress):
        for rid, ref, text in zip(gen.ids, gen.references, gen.texts):
            preds.append(score_cavsr(rid, condition, ref, text, cue=cues.get(rid, ""), t2s=settings.t2s))
    return preds


def run_info(settings: CavsrEvalSettings) -> dict:
    """Run description for report.md / metrics.json."""
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
            "data": settings.data, "ckpt": settings.model.ckpt or "none", "base": settings.model.base,
            "prompt": settings.prompt, "conditions": ",".join(conditions(settings)), "t2s": settings.t2s,
            "num_frames": settings.num_frames, "frame_size": settings.frame_size}


def run_cavsr(settings: CavsrEvalSettings) -> CavsrEvalResult:
    """Evaluate `settings.model` on `settings.data` under every condition and write the report."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rejects.jsonl").unlink(missing_ok=True)  # a fresh run's rejects, not the last run's
    model = load_eval_model(settings.model)
    preds: list[CavsrPrediction] = []
    for condition in conditions(settings):
        got = evaluate_condition(model, settings, condition)
        if not got:
            log.warning("condition %s: no clip could be evaluated (see %s)", condition, out / "rejects.jsonl")
        preds.extend(got)
    by_ablation = cer_by_ablation(preds, t2s=settings.t2s)
    for s in by_ablation:
        log.info("CER %-10s %.4f (n=%d, S/D/I %d/%d/%d)", s.name, s.cer, s.n, s.substitutions, s.deletions,
                 s.insertions)
    files = write_cavsr_report(out, preds, by_ablation, cer_by_cue(preds, t2s=settings.t2s),
                               run_info(settings), worst_k=settings.worst_k)
    return CavsrEvalResult(tuple(preds), files)
