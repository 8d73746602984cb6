"""Local backends: rapidocr (offline OCR), faster-whisper ASR, and a transformers chat model from a path.

rapidocr-onnxruntime ships its PP-OCR models in the wheel, so OCR runs offline. faster-whisper is
an optional import: building the backend without it installed raises a clear BackendError. The
transformers backend loads a local checkpoint directory only (never a hub id) with
``trust_remote_code=False``; it supports text parts, and image parts when the checkpoint has an
image processor (AutoProcessor + AutoModelForImageTextToText).
"""
from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avcot.pipeline.backends import AsrHint, BackendError, ImagePart, Message, TextPart
from avcot.records import OcrBox


class RapidOcr:
    """OcrBackend over rapidocr-onnxruntime; one call per distinct frame, boxes tagged with the frame index."""

    CACHE_FRAMES = 256

    def __init__(self, min_score: float = 0.5) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
            import rapidocr_onnxruntime
        except ImportError as exc:
            raise BackendError("ocr kind 'rapidocr' needs the rapidocr-onnxruntime package") from exc
        self._engine = RapidOCR()
        self._lock = threading.Lock()  # one onnxruntime session; serialise calls from worker threads
        # AVRT sets ask several questions of one clip: the same frames come back, so results are kept per frame.
        self._seen: OrderedDict[bytes, list] = OrderedDict()
        self.min_score = min_score
        version = getattr(rapidocr_onnxruntime, "__version__", "1")
        self.identity = f"rapidocr:{version}:min_score={min_score}"

    def read(self, frames: np.ndarray) -> list[OcrBox]:
        """OCR every frame of uint8 [T, H, W, 3]; low-confidence boxes are dropped."""
        if frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError(f"RapidOcr.read expects uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        boxes: list[OcrBox] = []
        for t, frame in enumerate(frames):
            for points, text, score in self._frame_result(frame):
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                if float(score) >= self.min_score and text.strip():
                    boxes.append(OcrBox(text=text.strip(), box=(min(xs), min(ys), max(xs), max(ys)),
                                        frame=t, score=float(score)))
        return boxes

    def _frame_result(self, frame: np.ndarray) -> list:
        """The engine's raw result for one frame; a frame seen among the last `CACHE_FRAMES` is not read again."""
        frame = np.ascontiguousarray(frame)
        key = hashlib.blake2b(frame.tobytes(), digest_size=16, person=str(frame.shape).encode()[:16]).digest()
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return self._seen[key]
            result, _ = self._engine(frame)
            self._seen[key] = result = list(result or [])
            if len(self._seen) > self.CACHE_FRAMES:
                self._seen.popitem(last=False)
        return result


class FasterWhisperAsr:
    """AsrBackend over faster-whisper with a local model directory (CTranslate2 format)."""

    def __init__(self, model_path: str, device: str = "cpu", compute_type: str = "int8",
                 language: str = "zh", beam_size: int = 5) -> None:
        try:
            from faster_whisper import WhisperModel  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BackendError(
                "asr kind 'faster_whisper' needs the faster-whisper package: pip install faster-whisper"
            ) from exc
        if not Path(model_path).is_dir():
            raise BackendError(f"faster_whisper model_path {model_path!r} is not a directory")
        self._model = WhisperModel(model_path, device=device, compute_type=compute_type)
        self.language, self.beam_size = language, beam_size
        self.identity = f"faster_whisper:{Path(model_path).name}:{language}:beam{beam_size}"

    def transcribe(self, audio: np.ndarray, sr: int, *, hint: AsrHint | None = None) -> str:
        """Transcribe 16 kHz mono audio; the hint is ignored (real ASR)."""
        if sr != 16000:
            raise ValueError(f"faster-whisper expects 16 kHz audio, got {sr} Hz")
        segments, _ = self._model.transcribe(audio.astype(np.float32), language=self.language,
                                             beam_size=self.beam_size)
        return "".join(s.text for s in segments).strip()


def check_model_dir(model_path: str) -> Path:
    """A local checkpoint directory with a config.json, else a BackendError saying what is missing."""
    path = Path(model_path)
    if not path.is_dir():
        raise BackendError(f"transformers model_path {model_path!r} is not a local directory "
                           "(hub ids are not supported; download the checkpoint first)")
    if not (path / "config.json").is_file():
        raise BackendError(f"transformers model_path {model_path!r} has no config.json")
    return path


class TransformersChat:
    """ChatBackend over a local transformers checkpoint (text, or text + images)."""

    def __init__(self, model_path: str, max_new_tokens: int = 512, dtype: str = "auto") -> None:
        path = check_model_dir(model_path)
        import transformers as tf

        self._processor = tf.AutoProcessor.from_pretrained(path, trust_remote_code=False)
        loader = tf.AutoModelForImageTextToText if hasattr(self._processor, "image_processor") \
            else tf.AutoModelForCausalLM
        try:
            self._model = loader.from_pretrained(path, trust_remote_code=False, dtype=dtype).eval()
        except ValueError as exc:
            raise BackendError(f"{model_path}: cannot load with {loader.__name__}: {exc}") from exc
        self.max_new_tokens = max_new_tokens
        self.identity = f"transformers:{path.resolve().name}:{max_new_tokens}"
        self._lock = threading.Lock()

    def _inputs(self, messages: Sequence[Message]):
        """Processor inputs built from the chat template; images decoded from PNG."""
        from PIL import Image

        wire, images = [], []
        for m in messages:
            content = []
            for p in m.parts:
                if isinstance(p, TextPart):
                    content.append({"type": "text", "text": p.text})
                elif isinstance(p, ImagePart):
                    images.append(Image.open(io.BytesIO(p.png)).convert("RGB"))
                    content.append({"type": "image"})
                else:
                    raise BackendError(f"{self.identity}: audio parts are not supported by this backend")
            wire.append({"role": m.role, "content": content})
        text = self._processor.apply_chat_template(wire, add_generation_prompt=True, tokenize=False)
        kwargs = {"images": images} if images else {}
        return self._processor(text=text, return_tensors="pt", **kwargs)

    def chat(self, messages: Sequence[Message]) -> str:
        """Greedy generation of the reply."""
        import torch

        with self._lock, torch.inference_mode():
            inputs = self._inputs(messages)
            out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self._processor.batch_decode([new], skip_special_tokens=True)[0].strip()
