"""Pipeline roles served by a chat model (OpenAI-compatible server or a local transformers model).

Every untrusted text (OCR, transcripts, captions, questions, teacher traces) enters a prompt only
through ``avcot.prompts`` builders, i.e. inside ``quote_data`` blocks. The judge and captioner
prompts are defined here because ``avcot.prompts`` has none; they follow the same rule.
"""
from __future__ import annotations

import hashlib
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
from avcot.records import LETTERS, McqItem
from avcot.traces import parse_answer, render_think_answer, split_think_answer

ASR_INSTRUCTION = "Transcribe the Mandarin speech in this audio. Output only the Chinese transcript."
CAPTION_INSTRUCTION = ("Describe the scene shown in these video frames in one or two sentences: place, "
                       "people, objects, actions. Do not transcribe on-screen text.")
# The verdict line: optional markdown, an optional "VERDICT:" label, the word, then the rest
# (a reason). Possessive runs, so a long line that is no verdict fails in one pass.
_VERDICT_LINE = re.compile(r"[\s*#>_`\-]*+(?P<label>verdict[\s*_`]*+[:：][\s*_`]*+)?(?P<word>keep|discard)\b"
                           r"(?P<rest>.*)", re.IGNORECASE | re.DOTALL)
# Without the label, the word must end the line or be followed by a separator ("KEEP: reason",
# "discard - filler only"), so that a final line such as "Keep in mind ..." is no verdict.
_BARE_REST = re.compile(r"[ \t*_`]*+(?:$|[:：\-—–.,;(（])")
_VERDICT_WORD = re.compile(r"\b(?:keep|discard)\b", re.IGNORECASE)
_LABELLED = re.compile(r"^[ \t*#>_`]*+verdict[ \t*_`]*+[:：][ \t*_`]*+(keep|discard)\b",
                       re.IGNORECASE | re.MULTILINE)
_LINE_INK = re.compile(r".*[^\s*#>_`]", re.DOTALL)
_LINE_BREAK = re.compile(r".*\n", re.DOTALL)
_THINK_END = re.compile(r".*</think>", re.DOTALL | re.IGNORECASE)


def prompt_fingerprint(*prompts: str) -> str:
    """Short hash of a role's prompt text(s), built on fixed placeholder inputs.

    It goes into the role's version (and so into the resume hash): any change to a prompt's wording
    makes the pipeline ask again instead of reusing answers given to the old prompt. A parser change
    does not show in the hash; it bumps the role's vN by hand.
    """
    return hashlib.sha256("\x1f".join(prompts).encode("utf-8")).hexdigest()[:12]


def judge_prompt(asr_a: str, asr_b: str) -> str:
    """Ask whether two transcripts differ because of linguistic ambiguity (homophones, names).

    The verdict has one defined place, the reply's final line, so that ``parse_verdict`` never
    has to guess which of several KEEP/DISCARD words in free text is the answer.
    """
    return "\n\n".join([
        DATA_NOTICE,
        "Two speech recognisers transcribed the same Mandarin clip. Decide whether they disagree because "
        "of linguistic ambiguity (homophones, near-homophones, proper nouns that sound alike) rather than "
        "plain recognition errors, punctuation, fillers or missing words.",
        quote_data("asr_a", asr_a),
        quote_data("asr_b", asr_b),
        "Reply with one short line of reasoning, then end with a final line that is exactly "
        "'VERDICT: KEEP' (the disagreement is ambiguity) or 'VERDICT: DISCARD' (anything else). "
        "Write nothing after the verdict line.",
    ])


def _excerpt(reply: str, limit: int = 300) -> str:
    """The reply for an error message: whole when short, else its start and end (the verdict's place)."""
    if len(reply) <= limit:
        return repr(reply)
    return f"{reply[:limit // 2]!r} … {reply[-limit // 2:]!r} ({len(reply)} chars)"


def _final_line(reply: str, end: int | None = None) -> tuple[int, int]:
    """(start, end) of the last line before `end` with something besides whitespace and markdown
    marks; (0, 0) if none. Anchored greedy matches from the end: a huge reply is never split."""
    ink = _LINE_INK.match(reply, 0, len(reply) if end is None else end)
    if ink is None:
        return 0, 0
    start = _LINE_BREAK.match(reply, 0, ink.end())
    return (start.end() if start else 0), ink.end()


def parse_verdict(reply: str) -> Judgement:
    """KEEP/DISCARD from the final line of the judge's reply (see ``judge_prompt``).

    Accepted final lines: 'VERDICT: KEEP', '**Verdict:** discard', or the bare word followed by
    nothing or a separator and a reason ('KEEP: homophones 实验/试验'). A leading <think> block of a
    reasoning model is skipped. Anything else raises ValueError quoting the (shortened) reply,
    which the pipeline records as the row's reject: no verdict on the final line ("I was told to
    output KEEP but the answer is DISCARD"), both words on it, or a 'VERDICT:' line elsewhere in
    the reply that contradicts the final one.
    """
    if not isinstance(reply, str):
        raise ValueError(f"judge reply is {type(reply).__name__}, not text: neither KEEP nor DISCARD")
    think_end = _THINK_END.match(reply)
    body = reply[think_end.end():] if think_end else reply
    start, end = _final_line(body)
    m = _VERDICT_LINE.fullmatch(body, start, end)
    if m is None or (m.group("label") is None and not _BARE_REST.match(m.group("rest"))):
        raise ValueError(f"judge reply has neither KEEP nor DISCARD on its final line: {_excerpt(reply)}")
    verdict = m.group("word").upper()
    others = {w.upper() for w in _VERDICT_WORD.findall(m.group("rest"))}
    others |= {w.upper() for w in _LABELLED.findall(body)}
    if others - {verdict}:
        raise ValueError(f"judge reply has contradictory verdicts ({verdict} on its final line, "
                         f"{' '.join(sorted(others - {verdict}))} elsewhere): {_excerpt(reply)}")
    reason = m.group("rest").strip(" \t*_`:：.,;-—–")
    if not reason:  # the reason line the prompt asks for, just above the verdict
        reason = body[slice(*_final_line(body, start))].strip(" \t*_`#>-")
    return Judgement(verdict == "KEEP", f"llm: {(reason or 'llm judge')[:200]}")


def _reply_text(reply: object, role: str) -> str:
    """A chat reply as text; anything else is a clear ValueError (the row's reject), not an
    AttributeError deep in a parser."""
    if not isinstance(reply, str):
        raise ValueError(f"{role} reply is {type(reply).__name__}, not text")
    return reply


class ChatAsr:
    """AsrBackend through an audio-capable chat model (the hint is ignored)."""

    @staticmethod
    def version() -> str:
        """Prompt and parser version (enters the resume hash through the role identity)."""
        return f"chat_asr:v1:{prompt_fingerprint(ASR_INSTRUCTION)}"

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"{self.version()}({chat.identity})"

    def transcribe(self, audio: np.ndarray, sr: int, *, hint: AsrHint | None = None) -> str:
        msg = Message("user", (AudioPart(wav_bytes(audio, sr)), TextPart(ASR_INSTRUCTION)))
        return _reply_text(self.chat.chat([msg]), "asr").strip()


class ChatJudge:
    """AmbiguityJudge through a text chat model."""

    @staticmethod
    def version() -> str:
        """Prompt and parser version (enters the resume hash through the role identity)."""
        return f"chat_judge:v2:{prompt_fingerprint(judge_prompt('{asr_a}', '{asr_b}'))}"

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"{self.version()}({chat.identity})"

    def judge(self, asr_a: str, asr_b: str) -> Judgement:
        return parse_verdict(self.chat.chat([text_message("user", judge_prompt(asr_a, asr_b))]))


class ChatCaptioner:
    """CaptionBackend through a vision chat model (frames sent as PNG images)."""

    @staticmethod
    def version() -> str:
        """Prompt and parser version (enters the resume hash through the role identity)."""
        return f"chat_caption:v1:{prompt_fingerprint(CAPTION_INSTRUCTION)}"

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"{self.version()}({chat.identity})"

    def caption(self, frames: np.ndarray) -> str:
        msg = Message("user", (*frame_parts(frames), TextPart(CAPTION_INSTRUCTION)))
        return _reply_text(self.chat.chat([msg]), "caption").strip()


def annotation_messages(request: AnnotationRequest, media: tuple = ()) -> list[Message]:
    """The single user message that asks a strong model for the AV-CoT trace.

    `media` (audio and/or image parts) goes before the text, as in every other role; the OCR split,
    caption, pinyin and ASR hypotheses travel as quoted text.
    """
    prompt = annotation_prompt(
        transcript=request.reference,
        subtitles=request.texts("subtitle"),
        background=request.texts("background"),
        caption=request.caption,
        pinyin=request.pinyin,
        candidates=[(c.options[0] if c.options else c.pinyin, c.options) for c in request.candidates],
        asr_hypotheses=(request.asr_a, request.asr_b),
        hears_audio=any(isinstance(p, AudioPart) for p in media),
    )
    if not media:
        return [text_message("user", prompt)]
    return [Message("user", (*media, TextPart(prompt)))]


class ChatTraceWriter:
    """TraceWriter through a strong chat model that hears the clip (``prompts.annotation_prompt``).

    As in the paper, the writer gets the raw audio plus the *visual annotations* (OCR split, caption)
    as text, not the frames ("to avoid single-modality dominance"); `frames` > 0 also sends that many
    uniform frames. `send_audio: false` gives a text-only writer (a model without audio input).
    """

    @staticmethod
    def version() -> str:
        """Prompt and parser version (enters the resume hash through the role identity)."""
        fields = dict(subtitles=["{subtitle}"], background=["{background}"], caption="{caption}",
                      pinyin="{pinyin}", candidates=[("{word}", ["{word}", "{homophone}"])],
                      asr_hypotheses=("{asr_a}", "{asr_b}"))
        probes = (annotation_prompt("{transcript}", **fields), annotation_prompt("", **fields, hears_audio=True))
        return f"chat_trace:v2:{prompt_fingerprint(*probes)}"

    def __init__(self, chat: ChatBackend, send_audio: bool = True, frames: int = 0,
                 frame_size: tuple[int, int] | list[int] = (224, 224), max_audio_seconds: float = 30.0) -> None:
        self.chat = chat
        self.send_audio, self.frames = send_audio, int(frames)
        self.frame_size, self.max_audio_seconds = tuple(frame_size), max_audio_seconds
        self.identity = (f"{self.version()}(audio={send_audio},frames={self.frames}x{self.frame_size},"
                         f"max_s={max_audio_seconds},{chat.identity})")

    def media(self, request: AnnotationRequest) -> tuple:
        """The audio part (and frames, when asked for) of the request's clip."""
        from avcot.media import load_audio, load_frames, probe

        parts: list = []
        if self.frames and request.video:
            parts.extend(frame_parts(load_frames(request.video, num_frames=self.frames, size=self.frame_size)))
        path = request.audio
        if self.send_audio and path and (path != request.video or probe(path).has_audio):
            parts.append(AudioPart(wav_bytes(load_audio(path, sr=16000, max_seconds=self.max_audio_seconds), 16000)))
        return tuple(parts)

    def write(self, request: AnnotationRequest) -> str:
        messages = annotation_messages(request, self.media(request))
        return _reply_text(self.chat.chat(messages), "trace writer").strip()


def _answer_line(line: str) -> str | None:
    """The letter of an 'Answer: X' line (markdown allowed), else None. Linear: one left-to-right scan."""
    body = line.strip().lstrip("*#>_` -").lower()
    if not body.startswith("answer"):
        return None
    rest = body[len("answer"):].lstrip("*_` ")
    if not rest.startswith((":", "：")):
        return None
    head = rest[1:].strip(" *_`()[].").upper()
    return head[0] if head and head[0] in LETTERS and (len(head) == 1 or not head[1].isalpha()) else None


def parse_teacher_reply(reply: object) -> TeacherReply:
    """(description + reasoning, letter) of a teacher reply in ``prompts.TEACHER_FORMAT``. Never raises.

    The letter comes from the last 'Answer: X' line, else from an <answer> tag; None when neither
    gives one (the select stage then counts the teacher as wrong). Think/answer tags are removed
    from the reasoning, which keeps the description and reasoning sections.
    """
    if not isinstance(reply, str):
        return TeacherReply("", None)
    lines = reply.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        letter = _answer_line(lines[i])
        if letter is not None:
            reasoning, _ = split_think_answer("\n".join(lines[:i] + lines[i + 1:]))
            return TeacherReply(reasoning, letter)
    reasoning, _ = split_think_answer(reply)
    return TeacherReply(reasoning, parse_answer(reply))


def _teacher_reply(reply: str) -> TeacherReply:
    return parse_teacher_reply(_reply_text(reply, "teacher"))


class ChatVisualTeacher:
    """Visual teacher: the MCQ prompt plus the sampled frames, no audio."""

    @staticmethod
    def version() -> str:
        """Prompt and parser version (enters the resume hash through the role identity)."""
        probe = visual_teacher_prompt("{question}", ("{option_a}", "{option_b}"))
        return f"chat_visual_teacher:v2:{prompt_fingerprint(probe)}"

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"{self.version()}({chat.identity})"

    def answer(self, item: McqItem, frames: np.ndarray) -> TeacherReply:
        prompt = visual_teacher_prompt(item.question, item.options)
        return _teacher_reply(self.chat.chat([Message("user", (*frame_parts(frames), TextPart(prompt)))]))


class ChatAudioTeacher:
    """Audio teacher: the MCQ prompt plus the audio clip, no frames."""

    @staticmethod
    def version() -> str:
        """Prompt and parser version (enters the resume hash through the role identity)."""
        probe = audio_teacher_prompt("{question}", ("{option_a}", "{option_b}"))
        return f"chat_audio_teacher:v2:{prompt_fingerprint(probe)}"

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"{self.version()}({chat.identity})"

    def answer(self, item: McqItem, audio: np.ndarray, sr: int) -> TeacherReply:
        prompt = audio_teacher_prompt(item.question, item.options)
        return _teacher_reply(self.chat.chat([Message("user", (AudioPart(wav_bytes(audio, sr)),
                                                               TextPart(prompt)))]))


class ChatMerger:
    """Text-only merger given both traces and the correct answer (as in the paper); the reply is
    re-rendered so the stored trace has the exact target format."""

    @staticmethod
    def version() -> str:
        """Prompt and parser version (enters the resume hash through the role identity)."""
        probe = merger_prompt("{question}", ("{option_a}", "{option_b}"), "{visual_trace}", "A", "{audio_trace}", "B",
                              correct_answer="A")
        return f"chat_merger:v2:{prompt_fingerprint(probe)}"

    def __init__(self, chat: ChatBackend) -> None:
        self.chat = chat
        self.identity = f"{self.version()}({chat.identity})"

    def merge(self, item: McqItem, visual: TeacherReply, audio: TeacherReply) -> str:
        prompt = merger_prompt(item.question, item.options, visual.reasoning, visual.answer or "(none)",
                               audio.reasoning, audio.answer or "(none)", correct_answer=item.answer)
        reply = _reply_text(self.chat.chat([text_message("user", prompt)]), "merger")
        think, letter = split_think_answer(reply)
        if letter is None or not think:
            raise ValueError(f"merger reply has no <think> reasoning or no <answer> letter: {_excerpt(reply)}")
        if letter != item.answer:
            raise ValueError(f"merger answered {letter}, not the correct answer {item.answer}: {_excerpt(reply)}")
        return render_think_answer(think, letter)
