"""Pipeline roles served by a chat model (OpenAI-compatible server or a local transformers model).

Every untrusted text (OCR, transcripts, captions, questions, teacher traces) enters a prompt only
through ``avcot.prompts`` builders, i.e. inside ``quote_data`` blocks. The judge and captioner
prompts are defined here because ``avcot.prompts`` has none; they follow the same rule.
"""
from __future__ import annotations

import re

import numpy as np

from avcot.filters import Judgement
from avcot.pipeline.backends import (
    AsrHint, AudioPart, ChatBackend, Message, TextPart, frame_parts, text_message, wav_bytes,
)
from avcot.pipeline.roles import AnnotationRequest, TeacherReply
from avcot.prompts import (
    DATA_NOTICE, annotation_prompt, audio_teacher_prompt, merger_prompt, quote_data, visual_teacher_prompt,
)
from avcot.records import McqItem
from avcot.traces import render_think_answer, split_think_answer

ASR_INSTRUCTION = "Transcribe the Mandarin speech in this audio. Output only the Chinese transcript."
CAPTION_INSTRUCTION = ("Describe the scene shown in these video frames in one or two sentences: place, "
                       "people, objects, actions. Do not transcribe on-screen text.")
_VERDICT = re.compile(r"\b(KEEP|DISCARD)\b", re.IGNORECASE)


def judge_prompt(asr_a: str, asr_b: str) -> str:
    """Ask whether two transcripts differ because of linguistic ambiguity (homophones, names)."""
    return "\n\n".join([
        DATA_NOTICE,
        "Two speech recognisers transcribed the same Mandarin clip. Decide whether they disagree because "
        "of linguistic ambiguity (homophones, near-homophones, proper nouns that sound alike) rather than "
        "plain recognition errors, punctuation, fillers or missing words.",
        quote_data("asr_a", asr_a),
        quote_data("asr_b", asr_b),
        "Answer with one word, KEEP (ambiguity) or DISCARD (anything else), then a short reason on the "
        "same line.",
    ])


def parse_verdict(reply: str) -> Judgement:
    """KEEP/DISCARD from the judge's reply; an answer with neither is an error."""
    m = _VERDICT.search(reply)
    if m is None:
        raise ValueError(f"judge reply has neither KEEP nor DISCARD: {reply[:120]!r}")
    reason = reply[m.end():].strip(" :.-\n") or "llm judge"
    return Judgement(m.group(1).upper() == "KEEP", f"llm: {reason[:200]}")


class ChatAsr:
    """AsrBackend through an audio-capable chat model (the hint is ignored)."""

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"chat_asr:v1({chat.identity})"

    def transcribe(self, audio: np.ndarray, sr: int, *, hint: AsrHint | None = None) -> str:
        msg = Message("user", (AudioPart(wav_bytes(audio, sr)), TextPart(ASR_INSTRUCTION)))
        return self.chat.chat([msg]).strip()


class ChatJudge:
    """AmbiguityJudge through a text chat model."""

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"chat_judge:v1({chat.identity})"

    def judge(self, asr_a: str, asr_b: str) -> Judgement:
        return parse_verdict(self.chat.chat([text_message("user", judge_prompt(asr_a, asr_b))]))


class ChatCaptioner:
    """CaptionBackend through a vision chat model (frames sent as PNG images)."""

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"chat_caption:v1({chat.identity})"

    def caption(self, frames: np.ndarray) -> str:
        msg = Message("user", (*frame_parts(frames), TextPart(CAPTION_INSTRUCTION)))
        return self.chat.chat([msg]).strip()


def annotation_messages(request: AnnotationRequest) -> list[Message]:
    """The single user message that asks a strong model for the AV-CoT trace."""
    prompt = annotation_prompt(
        transcript=request.reference,
        subtitles=request.texts("subtitle"),
        background=request.texts("background"),
        caption=request.caption,
        pinyin=request.pinyin,
        candidates=[(c.options[0] if c.options else c.pinyin, c.options) for c in request.candidates],
    )
    return [text_message("user", prompt)]


class ChatTraceWriter:
    """TraceWriter through a strong text chat model (``prompts.annotation_prompt``)."""

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"chat_trace:v1({chat.identity})"

    def write(self, request: AnnotationRequest) -> str:
        return self.chat.chat(annotation_messages(request)).strip()


def _teacher_reply(reply: str) -> TeacherReply:
    reasoning, letter = split_think_answer(reply)
    return TeacherReply(reasoning, letter)


class ChatVisualTeacher:
    """Visual teacher: the MCQ prompt plus the sampled frames, no audio."""

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"chat_visual_teacher:v1({chat.identity})"

    def answer(self, item: McqItem, frames: np.ndarray) -> TeacherReply:
        prompt = visual_teacher_prompt(item.question, item.options)
        return _teacher_reply(self.chat.chat([Message("user", (*frame_parts(frames), TextPart(prompt)))]))


class ChatAudioTeacher:
    """Audio teacher: the MCQ prompt plus the audio clip, no frames."""

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"chat_audio_teacher:v1({chat.identity})"

    def answer(self, item: McqItem, audio: np.ndarray, sr: int) -> TeacherReply:
        prompt = audio_teacher_prompt(item.question, item.options)
        return _teacher_reply(self.chat.chat([Message("user", (AudioPart(wav_bytes(audio, sr)),
                                                               TextPart(prompt)))]))


class ChatMerger:
    """Text-only merger; the reply is re-rendered so the stored trace has the exact target format."""

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"chat_merger:v1({chat.identity})"

    def merge(self, item: McqItem, visual: TeacherReply, audio: TeacherReply) -> str:
        prompt = merger_prompt(item.question, item.options, visual.reasoning, visual.answer or "(none)",
                               audio.reasoning, audio.answer or "(none)")
        think, letter = split_think_answer(self.chat.chat([text_message("user", prompt)]))
        if letter is None or not think:
            raise ValueError("merger reply has no <think> reasoning or no <answer> letter")
        return render_think_answer(think, letter)
