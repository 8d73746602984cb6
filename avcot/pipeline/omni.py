"""Local Qwen2.5-Omni backend (``chats: {kind: omni}``): every role in-process, no server.

The thinker and processor come from this project's own loaders (``avcot.model.load_thinker``,
``avcot.processor.load_processor``: safetensors only, encoders frozen), messages become the model's
inputs through ``avcot.chat.encode_example`` (the one place SFT, eval and the demo build them), and
replies come from ``avcot.rollout.generate_texts`` (greedy). So a user with local Omni weights and a
GPU runs every pipeline role - text, images, audio - with the same code paths training uses.

Message parts map onto one ``Prompt``: text parts joined; one image part is an image; two or more
image parts are sampled video frames (resized to ``frame_size``, an even count, as the video tower
needs); one audio part is the audio. A reply that does not parse is the calling role's business
(it becomes that row's reject).
"""
from __future__ import annotations

import io
import threading
from collections.abc import Sequence

import numpy as np

from avcot.pipeline.backends import AudioPart, BackendError, ImagePart, Message, TextPart


def _image(png: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] from PNG bytes, resized to (height, width) when given."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        if size is not None:
            im = im.resize((size[1], size[0]))
        return np.array(im, dtype=np.uint8)  # writable: torch refuses read-only arrays


def _audio(wav: bytes) -> np.ndarray:
    """float32 mono 16 kHz audio from WAV bytes (other rates refused: the roles always send 16 kHz)."""
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    if sr != 16000:
        raise BackendError(f"omni backend expects 16 kHz audio parts, got {sr} Hz")
    return audio.mean(axis=1)


class OmniChat:
    """ChatBackend over a Qwen2.5-Omni thinker loaded in-process (``model_path``: a checkpoint dir or 'tiny')."""

    def __init__(self, model_path: str = "tiny", max_new_tokens: int = 256, dtype: str = "float32",
                 frame_size: tuple[int, int] | list[int] = (112, 112), device: str = "cpu",
                 system: str | None = None) -> None:
        from avcot.model import load_thinker
        from avcot.processor import load_processor
        from avcot.prompts import SYSTEM_PROMPT

        try:
            self._processor = load_processor(model_path)
            self._model = load_thinker(model_path, dtype=dtype).to(device).eval()
        except (OSError, ValueError) as exc:  # missing dir, unsafe or unreadable weights
            raise BackendError(f"omni chat: cannot load {model_path!r}: {exc}") from exc
        self.max_new_tokens, self.device, self.dtype = max_new_tokens, device, self._model.dtype
        self.frame_size = tuple(frame_size)
        self.system = SYSTEM_PROMPT if system is None else system
        self.identity = f"omni:{model_path}:{dtype}:{max_new_tokens}:{self.frame_size}"
        self._lock = threading.Lock()  # one model; generation from worker threads is serialised

    def prompt(self, messages: Sequence[Message]):
        """The one ``avcot.chat.Prompt`` the messages describe (all user parts, in order)."""
        from avcot.chat import Prompt

        texts, images, audios = [], [], []
        for m in messages:
            for p in m.parts:
                if isinstance(p, TextPart):
                    texts.append(p.text)
                elif isinstance(p, ImagePart):
                    images.append(p.png)
                elif isinstance(p, AudioPart):
                    audios.append(p.wav)
        if len(audios) > 1:
            raise BackendError(f"{self.identity}: one audio part per request, got {len(audios)}")
        audio = _audio(audios[0]) if audios else None
        if len(images) == 1:
            return Prompt("\n\n".join(texts), self.system, image=_image(images[0]), audio=audio)
        video = None
        if images:
            frames = [_image(png, self.frame_size) for png in images]
            video = np.stack(frames + frames[-1:] * (len(frames) % 2))  # [T, H, W, 3], T even
        return Prompt("\n\n".join(texts), self.system, video=video, audio=audio,
                      fps=float(max(1, len(images))) / 2.0)

    def chat(self, messages: Sequence[Message]) -> str:
        """Greedy reply through the project's rollout engine."""
        import torch

        from avcot.chat import collate, encode_example
        from avcot.rollout import generate_texts

        example = encode_example(self._processor, self.prompt(messages))
        batch = collate([example], self._processor.tokenizer.pad_token_id, padding_side="left")
        batch.pop("labels")
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        for key in ("pixel_values", "pixel_values_videos", "input_features"):
            if key in batch:
                batch[key] = batch[key].to(self.dtype)
        with self._lock:
            return generate_texts(self._model, self._processor, batch, max_new_tokens=self.max_new_tokens)[0].strip()
