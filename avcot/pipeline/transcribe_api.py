"""ASR over the standard transcription API: ``POST {base_url}/audio/transcriptions`` (multipart).

The API Whisper servers expose (vLLM ``serve`` with a Whisper model, faster-whisper servers such as
speaches, OpenAI). The form carries ``file`` (16 kHz WAV), ``model``, ``language``, ``temperature``,
``response_format=verbose_json`` and ``timestamp_granularities[]=segment``; the reply's ``text`` is the
transcript and its ``segments`` (start, end, text) are what ``ingest`` cuts long recordings by. A server
that answers plain ``json`` (no segments) still gives the text.

Retries, jitter, rate limit, concurrency cap, key handling and the transient/permanent split are the
chat client's (``openai_compat.OpenAIChat.call``): one code path for both endpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from avcot.pipeline.backends import AsrHint, BackendError, wav_bytes
from avcot.pipeline.openai_compat import EndpointConfig, OpenAIChat, answer_options


@dataclass(frozen=True)
class Segment:
    """One timed piece of a transcript (seconds from the start of the audio sent)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """A transcription reply: the whole text and its timed segments (empty if the server gave none)."""

    text: str
    segments: tuple[Segment, ...] = ()


def parse_transcription(data: Any) -> Transcript:
    """A transcription response as a Transcript; ValueError (a permanent reject) when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError(f"transcription response has no 'text' string: {str(data)[:200]!r}")
    segments = []
    for s in data.get("segments") or []:
        try:
            segments.append(Segment(float(s["start"]), float(s["end"]), str(s.get("text", "")).strip()))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"transcription segment without numeric start/end: {str(s)[:200]!r}") from None
    return Transcript(data["text"].strip(), tuple(segments))


class OpenAITranscriber:
    """AsrBackend over ``/audio/transcriptions`` (the hint is ignored: this is a real recogniser)."""

    def __init__(self, base_url: str, model: str, language: str = "zh", prompt: str = "",
                 **endpoint: Any) -> None:
        try:
            cfg = EndpointConfig(base_url=base_url, model=model, **endpoint)
        except TypeError as exc:
            raise BackendError(f"openai_asr: bad endpoint options {sorted(endpoint)}: {exc}") from exc
        self._http = OpenAIChat(cfg)
        self.language, self.prompt = language, prompt
        self._url = cfg.base_url.rstrip("/") + "/audio/transcriptions"
        self.identity = f"openai_asr:{cfg.model}@{cfg.base_url.rstrip('/')}:{language}"

    @staticmethod
    def answer_options(options: dict[str, Any]) -> dict[str, Any]:
        """The options that can change a transcript (what enters the resume hash)."""
        return answer_options(options)

    def _form(self) -> dict[str, str]:
        cfg = self._http.cfg
        form = {"model": cfg.model, "language": self.language, "temperature": str(cfg.temperature),
                "response_format": "verbose_json", "timestamp_granularities[]": "segment"}
        if self.prompt:
            form["prompt"] = self.prompt
        return form

    def transcribe_segments(self, audio: np.ndarray, sr: int) -> Transcript:
        """Transcript with segment timestamps of mono float audio in [-1, 1]."""
        files = {"file": ("clip.wav", wav_bytes(audio, sr), "audio/wav")}
        form = self._form()
        found: list[Transcript] = []

        def parse(data: Any) -> str:
            found.append(parse_transcription(data))
            return found[-1].text

        self._http.call(self._url, lambda: self._http._client.post(
            self._url, data=form, files=files, headers=self._http._headers(json_body=False)), parse)
        return found[-1]

    def transcribe(self, audio: np.ndarray, sr: int, *, hint: AsrHint | None = None) -> str:
        """The transcript text."""
        return self.transcribe_segments(audio, sr).text
