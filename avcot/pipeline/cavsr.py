"""CAVSR data pipeline: dual ASR -> CER filter -> ambiguity judge -> OCR -> caption -> AV-CoT -> export.

Rows may come without a reference transcript (raw clips, as in the paper): the two ASR hypotheses
feed the judge, the pinyin and the ambiguous spans, and the trace writer's transcription becomes the
target. Rows with a reference (a labelled corpus, the synthetic clips) are checked against it.

Each stage is a pure function ``(row, backend, settings) -> Kept | Dropped``; media errors and
backend failures raise and end up in the rejects table, except transient ones (server down,
timeouts, 429/5xx), which leave the row pending for the next run (``failed.jsonl``).
Departures from the paper: OCR reads only ``ocr_frames`` uniformly sampled frames per clip (CPU
cost); with ``ocr: rapidocr`` the subtitle/background split is ``filters.classify_ocr``'s heuristic
(``ocr: chat`` asks a VLM for it, as the paper does).

Export (``<out>/sft.jsonl`` and ``sft.parquet``): the ``Clip`` fields id, video, audio, text,
pinyin, cue, trace, media paths relative to ``<out>``; ``annotations.parquet`` keeps the
intermediate fields (ASR outputs, CER, judge reason, OCR, caption, trace check) for inspection.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from avcot.filters import classify_ocr, dual_asr_keep
from avcot.phonetics import ambiguous_spans, homophones, pinyin
from avcot.pipeline.backends import AsrHint
from avcot.pipeline.config import CavsrSettings, PipelineConfig, RoleFactory
from avcot.pipeline.report import Counts, count, relpath, stage_rejects, write_manifest, write_reports
from avcot.pipeline.roles import AnnotationRequest, HomophoneCandidates, OcrText, VisualTextReader
from avcot.pipeline.rows import CavsrRow, load_rows
from avcot.pipeline.runner import Dropped, Kept, Stage, run_stages
from avcot.text import cer, normalize_zh
from avcot.traces import parse_avcot

SR = 16000
CLIP_SCHEMA = {"id": pl.String, "video": pl.String, "audio": pl.String, "text": pl.String,
               "pinyin": pl.String, "cue": pl.String, "trace": pl.String}


def _audio(row: CavsrRow, s: CavsrSettings):
    from avcot.media import load_audio

    return load_audio(row.audio or row.video, sr=SR, max_seconds=s.max_audio_seconds)


def _asr(row: CavsrRow, asr, s: CavsrSettings) -> str:
    reference = row.text
    lookup = getattr(asr, "lookup", None)  # the simulated recogniser's `transcripts` table
    if not reference and lookup is not None:
        reference = lookup(row.audio or row.video or "") or ""
    return asr.transcribe(_audio(row, s), SR, hint=AsrHint(reference, row.target, row.competitor))


def asr_a_stage(row: CavsrRow, asr, s: CavsrSettings) -> Kept:
    """First ASR system."""
    return Kept(dataclasses.replace(row, asr_a=_asr(row, asr, s)))


def asr_b_stage(row: CavsrRow, asr, s: CavsrSettings) -> Kept:
    """Second ASR system."""
    return Kept(dataclasses.replace(row, asr_b=_asr(row, asr, s)))


def cer_filter_stage(row: CavsrRow, _backend, s: CavsrSettings) -> Kept | Dropped:
    """Keep rows whose two ASR outputs disagree partly: 0 < CER(asr_a, asr_b) < 1."""
    rate = cer(row.asr_a, row.asr_b).cer
    if not dual_asr_keep(row.asr_a, row.asr_b):
        return Dropped(f"dual-ASR CER {rate:.3f} not in (0, 1)")
    return Kept(dataclasses.replace(row, asr_cer=rate))


def judge_stage(row: CavsrRow, judge, s: CavsrSettings) -> Kept | Dropped:
    """Keep rows whose disagreement is linguistic ambiguity (LLM judge or the offline rule)."""
    verdict = judge.judge(row.asr_a, row.asr_b)
    if not verdict.keep:
        return Dropped(f"not ambiguity: {verdict.reason}")
    return Kept(dataclasses.replace(row, judge_reason=verdict.reason))


def ocr_stage(row: CavsrRow, ocr, s: CavsrSettings) -> Kept:
    """Read the on-screen text of a few uniform frames, split into subtitles vs background text.

    A VLM (``VisualTextReader``) sorts the text itself; rapidocr boxes go through ``classify_ocr``,
    whose speech match uses the reference, or the first ASR hypothesis for a raw clip.
    """
    if row.video is None:
        return Kept(row)
    from avcot.media import load_frames

    frames = load_frames(row.video, num_frames=s.ocr_frames, size=s.ocr_size)
    if isinstance(ocr, VisualTextReader):
        found = ocr.split(frames)
        texts = tuple(OcrText(t, label, (0.0, 0.0, 0.0, 0.0)) for label, group in
                      (("subtitle", found.subtitles), ("background", found.background)) for t in group)
        return Kept(dataclasses.replace(row, ocr=texts))
    height, width = frames.shape[1:3]
    labelled = classify_ocr(ocr.read(frames), (width, height), row.text or row.asr_a)
    texts = tuple(OcrText(b.text, label, tuple(b.box), b.frame, round(b.score, 4)) for b, label in labelled)
    return Kept(dataclasses.replace(row, ocr=texts))


def caption_stage(row: CavsrRow, captioner, s: CavsrSettings) -> Kept:
    """One scene description of a few uniform frames ('' for audio-only rows)."""
    if row.video is None:
        return Kept(row)
    from avcot.media import load_frames

    frames = load_frames(row.video, num_frames=s.caption_frames, size=s.caption_size)
    return Kept(dataclasses.replace(row, caption=captioner.caption(frames)))


def _common(words: set[str] | frozenset[str]) -> list[str]:
    """Candidate words written in basic CJK characters only (drops rare extension-block forms)."""
    return sorted(w for w in words if all("\u4e00" <= ch <= "\u9fff" for ch in w))


def candidates(row: CavsrRow, limit: int) -> tuple[HomophoneCandidates, ...]:
    """Homophone sets where the two ASR outputs differ but sound alike.

    When the row names its homophone pair (synthetic clips) and both words occur in the ASR
    outputs, the pair is the candidate set (word-level, as in the paper's examples); otherwise
    each differing span from ``phonetics.ambiguous_spans`` gives one set.
    """
    pair = [w for w in (row.target, row.competitor) if w]
    if len(pair) == 2 and any(w in row.asr_a for w in pair) and any(w in row.asr_b for w in pair):
        extra = _common(homophones(pair[0]) - set(pair))
        options = tuple(dict.fromkeys([*pair, *extra]))[:limit]
        return (HomophoneCandidates(pinyin(pair[0], tones=False), options),)
    out = []
    for span in ambiguous_spans(row.asr_a, row.asr_b):
        extra = _common(homophones(span.text_a) - {span.text_a, span.text_b})
        options = tuple(dict.fromkeys([span.text_a, span.text_b, *extra]))[:limit]
        out.append(HomophoneCandidates(span.pinyin, options))
    return tuple(out)


def annotation_request(row: CavsrRow, s: CavsrSettings) -> AnnotationRequest:
    """What the trace writer sees for one row."""
    return AnnotationRequest(row_id=row.id, reference=row.text,
                             pinyin=row.pinyin or pinyin(row.text or row.asr_a),
                             caption=row.caption, ocr=row.ocr,
                             candidates=candidates(row, s.max_candidates),
                             asr_a=row.asr_a, asr_b=row.asr_b, audio=row.audio or row.video, video=row.video)


def annotate_stage(row: CavsrRow, writer, s: CavsrSettings) -> Kept:
    """Write the AV-CoT trace (perception, reasoning, transcription)."""
    return Kept(dataclasses.replace(row, trace=writer.write(annotation_request(row, s))))


def validate_stage(row: CavsrRow, _backend, s: CavsrSettings) -> Kept | Dropped:
    """The trace must parse; its transcription must match the reference (else drop or record).

    A raw clip (no reference) has nothing to match: the trace's transcription is the target, so it
    only has to be non-empty.
    """
    parsed = parse_avcot(row.trace)
    if parsed is None:
        raise ValueError(f"trace does not parse as AV-CoT (no Transcription section): {row.trace[:120]!r}")
    if not row.text:
        if not normalize_zh(parsed.transcription):
            raise ValueError(f"raw clip: the trace's Transcription section is empty: {row.trace[-120:]!r}")
        return Kept(dataclasses.replace(row, trace_transcription=parsed.transcription))
    match = normalize_zh(parsed.transcription) == normalize_zh(row.text)
    if not match and s.on_mismatch == "filter":
        return Dropped(f"trace transcription {parsed.transcription!r} != reference {row.text!r}")
    return Kept(dataclasses.replace(row, trace_transcription=parsed.transcription, trace_match=match))


def cavsr_stages(s: CavsrSettings) -> list[Stage]:
    """The CAVSR stages in order; each stage hashes only the settings it depends on."""
    def st(name, fn, role, *uses):
        return Stage(name, fn, role, s, CavsrRow, uses)

    return [st("asr_a", asr_a_stage, "asr_a", "max_audio_seconds"),
            st("asr_b", asr_b_stage, "asr_b", "max_audio_seconds"),
            st("cer_filter", cer_filter_stage, None), st("judge", judge_stage, "judge"),
            st("ocr", ocr_stage, "ocr", "ocr_frames", "ocr_size"),
            st("caption", caption_stage, "caption", "caption_frames", "caption_size"),
            st("annotate", annotate_stage, "annotator", "max_candidates"),
            st("validate", validate_stage, None, "on_mismatch")]


def export_cavsr(rows: Sequence[CavsrRow], out: Path) -> None:
    """sft.{jsonl,parquet} with the Clip fields, plus annotations.parquet.

    A raw clip's `text` is its trace's transcription (the paper's training target); `annotations`
    says which rows had a reference (`reference` true) and which got their text from the trace.
    """
    def text(r: CavsrRow) -> str:
        return r.text or r.trace_transcription

    clips = [{"id": r.id, "video": relpath(r.video, out), "audio": relpath(r.audio, out), "text": text(r),
              "pinyin": r.pinyin or pinyin(text(r)), "cue": r.cue, "trace": r.trace} for r in rows]
    write_manifest(clips, out, CLIP_SCHEMA)
    notes = [{"id": r.id, "asr_a": r.asr_a, "asr_b": r.asr_b, "asr_cer": r.asr_cer, "judge": r.judge_reason,
              "ocr": json.dumps([dataclasses.asdict(o) for o in r.ocr], ensure_ascii=False),
              "caption": r.caption, "trace_match": r.trace_match, "reference": bool(r.text)} for r in rows]
    schema = {"id": pl.String, "asr_a": pl.String, "asr_b": pl.String, "asr_cer": pl.Float64,
              "judge": pl.String, "ocr": pl.String, "caption": pl.String, "trace_match": pl.Boolean,
              "reference": pl.Boolean}
    write_manifest(notes, out, schema, stem="annotations")


def run_cavsr(input_path: str | Path, out: str | Path, config: PipelineConfig,
              limit: int | None = None) -> Counts:
    """The whole CAVSR pipeline; resumable, returns (and writes) the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, load_rejects, rows_in = load_rows(input_path, "cavsr", limit)
    run = run_stages(cavsr_stages(config.cavsr), rows, out, config, RoleFactory(config))
    export_cavsr(run.final, out)
    counts = count(rows_in, load_rejects, run.per_stage, len(run.final), run.attempted)
    write_reports(out, counts, [*load_rejects, *stage_rejects(run.per_stage)], run.per_stage)
    return counts
