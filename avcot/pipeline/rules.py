"""Offline rule backends: the whole pipeline runs with no network and no model weights.

These are stand-ins, not models. In particular ``RuleAsr`` SIMULATES two ASR systems on
synthetic clips, where the reference and the homophone pair are known: ``mode="reference"``
returns the reference (a perfect recogniser), ``mode="swap"`` returns the reference with the
target homophone replaced by its competitor (a recogniser that picked the wrong homophone).
Their disagreement is exactly the linguistic ambiguity the CAVSR filter looks for. Without
target/competitor fields the swap uses the first word of the reference (2 characters, then 1)
that has another homophone in ``phonetics.homophones``, choosing the smallest alternative so
the output is deterministic. Real audio goes through ``local.FasterWhisperAsr`` or a chat model.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avcot.filters import Judgement, ambiguity_rule
from avcot.phonetics import homophones
from avcot.pipeline.backends import AsrHint, BackendError
from avcot.pipeline.roles import AnnotationRequest, HomophoneCandidates, TeacherReply, VisualTextReader
from avcot.records import LETTERS, McqItem, OcrBox
from avcot.text import normalize_zh
from avcot.traces import AVCoTTrace, render_avcot, render_think_answer

# Named colours for the rule captioner (RGB); nearest by Euclidean distance.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "red": (200, 40, 40),
    "orange": (230, 140, 30), "yellow": (230, 220, 50), "green": (50, 160, 60), "cyan": (60, 200, 210),
    "blue": (40, 70, 200), "dark blue": (20, 30, 90), "purple": (130, 60, 170), "brown": (120, 80, 40),
    "pink": (240, 160, 190),
}


def swap_homophone(reference: str, target: str = "", competitor: str = "") -> str:
    """The reference with one homophone replaced (see module docstring); unchanged if none found."""
    if target and competitor and target in reference:
        return reference.replace(target, competitor, 1)
    for width in (2, 1):
        for start in range(len(reference) - width + 1):
            word = reference[start : start + width]
            others = sorted(w for w in homophones(word) if w != word and len(w) == width)
            if others:
                return reference[:start] + others[0] + reference[start + width :]
    return reference


def load_transcripts(path: str | Path) -> dict[str, str]:
    """Media path -> reference text from a manifest JSONL (paths resolved against its folder)."""
    path = Path(path)
    table: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BackendError(f"{path}:{n}: not JSON ({exc.msg})") from None
        for field in ("audio", "video"):
            if row.get(field) and row.get("text"):
                table[str((path.parent / row[field]).resolve())] = row["text"]
    return table


class RuleAsr:
    """Simulated ASR for synthetic clips: the reference, or the reference with a homophone swapped."""

    def __init__(self, mode: str = "reference", transcripts: str | None = None) -> None:
        if mode not in ("reference", "swap"):
            raise BackendError(f"rule_asr mode must be 'reference' or 'swap', got {mode!r}")
        self.mode = mode
        self._table = load_transcripts(transcripts) if transcripts else {}
        self.identity = f"rule_asr:{mode}:v1" + (f":{Path(transcripts).name}" if transcripts else "")

    def transcribe(self, audio: np.ndarray, sr: int, *, hint: AsrHint | None = None) -> str:
        """Return the simulated transcript; needs a hint with the reference text."""
        if hint is None or not hint.reference:
            raise BackendError(
                "rule_asr simulates ASR from the reference text; this row has none. Give the role a manifest "
                "that has it (in the pipeline config: teacher_asr.transcripts: <your manifest> for AVRT, "
                "asr_a.transcripts and asr_b.transcripts: <your manifest> for CAVSR; its rows name this media "
                "file and its text), or use a real recogniser (kind openai_asr, faster_whisper or chat)")
        if self.mode == "reference":
            return hint.reference
        return swap_homophone(hint.reference, hint.target, hint.competitor)

    def lookup(self, media_path: str) -> str | None:
        """Reference text of a media file from the `transcripts` manifest (None if unknown)."""
        return self._table.get(str(Path(media_path).resolve()))


class RuleJudge:
    """The offline ambiguity rule (``filters.ambiguity_rule``) as a judge backend."""

    identity = "rule_judge:v1"

    def judge(self, asr_a: str, asr_b: str) -> Judgement:
        return ambiguity_rule(asr_a, asr_b)


def colour_name(rgb: np.ndarray) -> str:
    """Nearest palette name for one RGB triple."""
    names = list(PALETTE)
    ref = np.array([PALETTE[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((ref - rgb.astype(np.float32)) ** 2).sum(axis=1)))]


class RuleCaptioner:
    """Describes dominant colours, brightness and motion of the frames (no model)."""

    identity = "rule_caption:v1"

    def caption(self, frames: np.ndarray) -> str:
        if frames.ndim != 4 or frames.shape[0] == 0:
            raise ValueError(f"caption expects [T, H, W, 3] frames, got shape {frames.shape}")
        h = frames.shape[1]
        top = colour_name(frames[:, : h // 2].reshape(-1, 3).mean(axis=0))
        bottom = colour_name(frames[:, h // 2 :].reshape(-1, 3).mean(axis=0))
        brightness = float(frames.mean()) / 255.0
        motion = float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean()) if len(frames) > 1 else 0.0
        light = "bright" if brightness > 0.6 else "dim" if brightness < 0.3 else "evenly lit"
        still = "a static shot" if motion < 2.0 else "a moving shot"
        layout = f"mostly {top}" if top == bottom else f"{top} in the upper half and {bottom} below"
        article = "An" if light[0] in "aeiou" else "A"
        return f"{article} {light} scene, {layout}, {still}."


def _chosen(request: AnnotationRequest) -> tuple[HomophoneCandidates | None, str]:
    """(candidate set, word the reference uses) for the first set with a word in the reference."""
    for cand in request.candidates:
        for word in cand.options:
            if word and word in normalize_zh(request.reference):
                return cand, word
    return None, ""


def _visual_evidence(word: str, request: AnnotationRequest) -> str:
    """Which visual source (background text, subtitle, caption) contains `word`, if any."""
    for label in ("background", "subtitle"):
        for text in request.texts(label):
            if word and word in normalize_zh(text):
                return f"the {label} text \"{text}\" shows \"{word}\""
    if word and word in request.caption:
        return f"the scene description mentions \"{word}\""
    return ""


def _reasoning(request: AnnotationRequest) -> str:
    """Name the candidates, then the visual cue that decides (or conflicts, or is missing)."""
    cand, word = _chosen(request)
    if cand is None:
        return "The pronunciation is unambiguous; no homophone needs visual disambiguation."
    options = cand.options
    listing = f"The audio \"{cand.pinyin}\" could be any of: {', '.join(options)}."
    evidence = _visual_evidence(word, request)
    if evidence:
        return f"{listing} Because {evidence}, the visual context supports \"{word}\"."
    shown = next((o for o in options if o != word and _visual_evidence(o, request)), "")
    if shown:
        return (f"{listing} {_visual_evidence(shown, request).capitalize()}, but the sentence as spoken "
                f"fits \"{word}\"; the on-screen text conflicts with the speech, so the speech is kept.")
    return f"{listing} No visual cue decides it, so the reading that fits the sentence, \"{word}\", is kept."


def raw_transcription(request: AnnotationRequest) -> str:
    """A raw clip's transcript without a model: the first ASR hypothesis, with each ambiguous word
    replaced by the candidate the on-screen text or caption shows (when exactly one does)."""
    text = request.asr_a or request.asr_b
    for cand in request.candidates:
        shown = [o for o in cand.options if _visual_evidence(o, request)]
        if len(shown) != 1 or shown[0] in text:
            continue
        heard = next((o for o in cand.options if o and o in text), None)
        if heard is not None:
            text = text.replace(heard, shown[0], 1)
    return text


class RuleTraceWriter:
    """Builds the AV-CoT trace from the reference (a raw clip: ``raw_transcription``), OCR, caption,
    pinyin and homophone candidates."""

    identity = "rule_trace:v2"

    def write(self, request: AnnotationRequest) -> str:
        subs, background = request.texts("subtitle"), request.texts("background")
        cues = [f"Scene: {request.caption}" if request.caption else "Scene: not described."]
        cues.append("Subtitles: " + ("; ".join(subs) if subs else "none"))
        cues.append("Background text: " + ("; ".join(background) if background else "none"))
        if not request.reference:  # a raw clip: decide the words, then explain them like a labelled one
            request = dataclasses.replace(request, reference=raw_transcription(request))
        reasoning = _reasoning(request)
        trace = AVCoTTrace(visual_cues="\n".join(cues), acoustic_pinyin=request.pinyin,
                           reasoning=reasoning, transcription=request.reference)
        return render_avcot(trace)


def option_overlap(option: str, evidence: str) -> float:
    """Fraction of the option's normalised characters that occur in the evidence text."""
    opt, ev = normalize_zh(option), normalize_zh(evidence)
    if not opt:
        return 0.0
    return sum(ch in ev for ch in opt) / len(opt)


def pick_option(options: Sequence[str], evidence: str) -> tuple[str | None, float]:
    """The letter with the highest overlap; None when nothing overlaps or the best ties."""
    scores = [option_overlap(o, evidence) for o in options]
    best = max(scores, default=0.0)
    if best <= 0.0 or scores.count(best) > 1:
        return None, best
    return LETTERS[scores.index(best)], best


def _reply(source: str, evidence: str, item: McqItem) -> TeacherReply:
    """Shared reasoning text of the two rule teachers."""
    letter, score = pick_option(item.options, evidence)
    if not evidence:
        return TeacherReply(f"The {source} gives no usable text.", None)
    if letter is None:
        return TeacherReply(f"The {source} says \"{evidence}\", which matches no single option.", None)
    option = item.options[LETTERS.index(letter)]
    return TeacherReply(f"The {source} says \"{evidence}\"; option {letter} \"{option}\" matches "
                        f"{score:.0%} of it.", letter)


class OcrVisualTeacher:
    """Rule visual teacher: reads the frames with OCR and picks the option the text matches."""

    def __init__(self, ocr) -> None:  # ocr: OcrBackend
        self.ocr = ocr
        self.identity = f"ocr_teacher:v1({ocr.identity})"

    def answer(self, item: McqItem, frames: np.ndarray) -> TeacherReply:
        if isinstance(self.ocr, VisualTextReader):  # ocr: chat (a VLM that sorts the text itself)
            found = self.ocr.split(frames)
            return _reply("on-screen text", " ".join(dict.fromkeys((*found.subtitles, *found.background))), item)
        boxes: list[OcrBox] = self.ocr.read(frames)
        seen = dict.fromkeys(b.text for b in boxes)
        return _reply("on-screen text", " ".join(seen), item)


class TranscriptAudioTeacher:
    """Rule audio teacher: transcribes the audio, picks the option the transcript matches."""

    def __init__(self, asr) -> None:  # asr: AsrBackend (a RuleAsr needs a hint or a transcripts table)
        self.asr = asr
        self.identity = f"transcript_teacher:v1({asr.identity})"

    def answer(self, item: McqItem, audio: np.ndarray, sr: int) -> TeacherReply:
        hint = None
        if isinstance(self.asr, RuleAsr):
            known = self.asr.lookup(item.audio or item.video or "")
            hint = AsrHint(reference=known) if known else None
        return _reply("speech", self.asr.transcribe(audio, sr, hint=hint), item)


class TemplateMerger:
    """Template merger: visual reasoning, then audio reasoning, then the agreed letter."""

    identity = "template_merger:v1"

    def merge(self, item: McqItem, visual: TeacherReply, audio: TeacherReply) -> str:
        letter = visual.answer if visual.answer == audio.answer else None
        if letter is None:
            raise ValueError(f"teachers disagree ({visual.answer} vs {audio.answer}); nothing to merge")
        option = item.options[LETTERS.index(letter)]
        think = (f"Looking at the frames: {visual.reasoning} Listening to the audio: {audio.reasoning} "
                 f"Both agree on {letter}, \"{option}\".")
        return render_think_answer(think, letter)
