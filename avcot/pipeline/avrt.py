"""AVRT data pipeline: MCQ check -> visual teacher (8 frames) -> audio teacher (10 s) -> keep both-correct -> merge.

The first stage rejects items whose answer letter cannot score a reply (two options with the same text).
Every row that reaches the selection stage gets a difficulty label from teacher correctness
(easy: both right, medium: one, hard: neither); ``<out>/difficulty.parquet`` lists it for all of
them, kept or not. Only rows where both teachers were right are merged into
``<think>…</think><answer>X</answer>`` and exported as ``McqItem`` rows (``sft.jsonl`` /
``sft.parquet``, media paths relative to ``<out>``).

The RL stage trains on more data than the SFT cold start, so ``rl.jsonl`` / ``rl.parquet`` list every
well-formed item with its answer, whatever the teachers said: each row that passed the input checks and the
MCQ check and that no stage rejected (a stage reject is a media error or a permanent refusal, and is in the
rejects table); rows a transient error left pending are listed, since GRPO needs no teacher reply. Trace empty,
difficulty where the selection stage labelled the row.

Departure: a row without video gets a visual-teacher "no video" reply instead of a model call (and likewise
without audio), so single-modality questions end up 'medium' and filtered, as the both-correct rule implies.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from avcot.filters import both_teachers_correct, difficulty
from avcot.pipeline.config import AvrtSettings, PipelineConfig, RoleFactory
from avcot.pipeline.report import Counts, count, relpath, stage_rejects, write_manifest, write_reports
from avcot.pipeline.roles import TeacherReply
from avcot.pipeline.rows import AvrtRow, load_rows
from avcot.pipeline.runner import Dropped, Kept, Stage, run_stages
from avcot.pipeline.store import Outcome
from avcot.records import McqItem

SR = 16000
MCQ_SCHEMA = {"id": pl.String, "question": pl.String, "options": pl.List(pl.String), "answer": pl.String,
              "video": pl.String, "audio": pl.String, "image": pl.String, "trace": pl.String,
              "modality": pl.String, "difficulty": pl.String}
DIFFICULTY_SCHEMA = {"id": pl.String, "answer": pl.String, "visual_answer": pl.String,
                     "audio_answer": pl.String, "difficulty": pl.String, "kept": pl.Boolean}


def item_of(row: AvrtRow) -> McqItem:
    """The McqItem view of a row (what teachers and mergers receive)."""
    return McqItem(id=row.id, question=row.question, options=row.options, answer=row.answer, video=row.video,
                   audio=row.audio, image=row.image, modality=row.modality)


def _image_frames(path: str, size: tuple[int, int]) -> np.ndarray:
    """A still image as a one-frame clip."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size[1], size[0])), dtype=np.uint8)[None]


def repeated_options(options: Sequence[str]) -> list[str]:
    """Option texts given more than once (compared trimmed and case-folded), in first-seen order."""
    seen: dict[str, int] = {}
    for o in options:
        key = o.strip().casefold()
        seen[key] = seen.get(key, 0) + 1
    return [k for k, n in seen.items() if n > 1]


def mcq_check_stage(row: AvrtRow, _backend, s: AvrtSettings) -> Kept:
    """Reject an item whose answer letter is not the only right reply: two options with the same text."""
    repeated = repeated_options(row.options)
    if repeated:
        raise ValueError(f"ill-formed MCQ: option(s) {repeated} given more than once in {list(row.options)}, so "
                         f"answer {row.answer} is not the only right letter")
    return Kept(row)


def visual_teacher_stage(row: AvrtRow, teacher, s: AvrtSettings) -> Kept:
    """The visual teacher answers from `visual_frames` uniform frames (no audio)."""
    if row.video is None and row.image is None:
        reply = TeacherReply("No video frames are available for this question.", None)
    else:
        from avcot.media import load_frames

        frames = (load_frames(row.video, num_frames=s.visual_frames, size=s.frame_size) if row.video
                  else _image_frames(row.image, s.frame_size))
        reply = teacher.answer(item_of(row), frames)
    return Kept(dataclasses.replace(row, visual_reasoning=reply.reasoning, visual_answer=reply.answer))


def audio_teacher_stage(row: AvrtRow, teacher, s: AvrtSettings) -> Kept:
    """The audio teacher answers from the first `audio_seconds` of audio (no frames)."""
    path = row.audio or row.video
    if path is None:
        reply = TeacherReply("No audio is available for this question.", None)
    else:
        from avcot.media import load_audio, probe

        if row.audio is None and not probe(path).has_audio:
            reply = TeacherReply("The video has no audio track.", None)
        else:
            audio = load_audio(path, sr=SR, max_seconds=s.audio_seconds)
            reply = teacher.answer(item_of(row), audio, SR)
    return Kept(dataclasses.replace(row, audio_reasoning=reply.reasoning, audio_answer=reply.answer))


def select_stage(row: AvrtRow, _backend, s: AvrtSettings) -> Kept | Dropped:
    """Label difficulty for every row; keep only both-correct rows (unless disabled)."""
    v_ok, a_ok = row.visual_answer == row.answer, row.audio_answer == row.answer
    labelled = dataclasses.replace(row, difficulty=difficulty(v_ok, a_ok))
    if s.require_both_correct and not both_teachers_correct(row.visual_answer, row.audio_answer, row.answer):
        return Dropped(f"teachers not both correct (visual {row.visual_answer}, audio {row.audio_answer}, "
                       f"gold {row.answer}); difficulty {labelled.difficulty}")
    return Kept(labelled)


def merge_stage(row: AvrtRow, merger, s: AvrtSettings) -> Kept:
    """Merge both teacher traces into the `<think>…</think><answer>X</answer>` target."""
    visual = TeacherReply(row.visual_reasoning, row.visual_answer)
    audio = TeacherReply(row.audio_reasoning, row.audio_answer)
    return Kept(dataclasses.replace(row, trace=merger.merge(item_of(row), visual, audio)))


def avrt_stages(s: AvrtSettings) -> list[Stage]:
    """The AVRT stages in order."""
    return [Stage("mcq_check", mcq_check_stage, None, s, AvrtRow, ()),
            Stage("visual_teacher", visual_teacher_stage, "visual_teacher", s, AvrtRow,
                  ("visual_frames", "frame_size")),
            Stage("audio_teacher", audio_teacher_stage, "audio_teacher", s, AvrtRow, ("audio_seconds",)),
            Stage("select", select_stage, None, s, AvrtRow, ("require_both_correct",)),
            Stage("merge", merge_stage, "merger", s, AvrtRow, ())]


def difficulty_table(outcomes: Sequence[Outcome]) -> list[dict]:
    """One difficulty row per item that reached the selection stage."""
    import json

    rows = []
    for o in outcomes:
        if o.status in ("rejected", "failed"):
            continue
        r = AvrtRow.from_dict(json.loads(o.payload))
        label = r.difficulty or difficulty(r.visual_answer == r.answer, r.audio_answer == r.answer)
        rows.append({"id": r.id, "answer": r.answer, "visual_answer": r.visual_answer,
                     "audio_answer": r.audio_answer, "difficulty": label, "kept": o.status == "kept"})
    return rows


def mcq_record(r: AvrtRow, out: Path, *, trace: str | None, difficulty: str | None) -> dict:
    """A manifest row with the McqItem fields, media paths relative to the export folder `out`."""
    return {"id": r.id, "question": r.question, "options": list(r.options), "answer": r.answer,
            "video": relpath(r.video, out), "audio": relpath(r.audio, out), "image": relpath(r.image, out),
            "trace": trace, "modality": r.modality, "difficulty": difficulty}


def export_avrt(rows: Sequence[AvrtRow], out: Path) -> None:
    """sft.{jsonl,parquet} with the McqItem fields (trace and difficulty included)."""
    write_manifest([mcq_record(r, out, trace=r.trace, difficulty=r.difficulty) for r in rows], out, MCQ_SCHEMA)


def rl_rows(per_stage: dict[str, list[Outcome]]) -> list[AvrtRow]:
    """Rows for the RL manifest: kept by the MCQ check and rejected by no later stage, in input order."""
    import json

    rejected = {o.row_id for outs in per_stage.values() for o in outs if o.status == "rejected"}
    return [AvrtRow.from_dict(json.loads(o.payload)) for o in per_stage["mcq_check"]
            if o.status != "rejected" and o.row_id not in rejected]


def export_rl(rows: Sequence[AvrtRow], labels: Sequence[dict], out: Path) -> int:
    """rl.{jsonl,parquet}: the McqItem fields of `rows` (no trace; difficulty from `labels` where known)."""
    by_id = {r["id"]: r["difficulty"] for r in labels}
    items = [mcq_record(r, out, trace=None, difficulty=by_id.get(r.id)) for r in rows]
    write_manifest(items, out, MCQ_SCHEMA, stem="rl")
    return len(items)


def run_avrt(input_path: str | Path, out: str | Path, config: PipelineConfig, limit: int | None = None) -> Counts:
    """The whole AVRT pipeline; resumable, returns (and writes) the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, load_rejects, rows_in = load_rows(input_path, "avrt", limit)
    run = run_stages(avrt_stages(config.avrt), rows, out, config, RoleFactory(config))
    export_avrt(run.final, out)
    labels = difficulty_table(run.per_stage["select"])
    write_manifest(labels, out, DIFFICULTY_SCHEMA, stem="difficulty")
    n_rl = export_rl(rl_rows(run.per_stage), labels, out)
    counts = count(rows_in, load_rejects, run.per_stage, len(run.final), run.attempted,
                   exports={"sft": len(run.final), "rl": n_rl})
    write_reports(out, counts, [*load_rejects, *stage_rejects(run.per_stage)], run.per_stage)
    return counts
