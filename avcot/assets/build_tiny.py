"""Rebuild the embedded tiny tokenizer and processor files (run once; the outputs are committed).

    python -m avcot.assets.build_tiny

Why a committed tokenizer: there is no model hub here, and a real Qwen tokenizer is 150k tokens
(too wide for a model of a few hundred thousand parameters). This trains a small byte-level BPE
(the same family as Qwen's) on Mandarin phrases from pypinyin's dictionaries plus the English
vocabulary of our prompts, so Chinese characters are mostly single tokens and any text still encodes.
"""
from __future__ import annotations

import itertools
from pathlib import Path

HERE = Path(__file__).parent / "tiny"

# Qwen2.5-Omni's special tokens, in the order the real vocabulary lists them.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>",
    "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
)

ENGLISH = """You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving
auditory and visual inputs, as well as generating text and speech. Multimodal Perceive: Visual Cues:
Acoustic Analysis: Disambiguation Reasoning: Transcription: Transcribe the speech in the video.
Watch the video and listen to the audio. Answer the question. Think step by step. <think> </think>
<answer> </answer> A B C D scene subtitle background text on screen the speaker says pinyin candidates
homophone the visual context supports therefore option question options correct answer is"""


def corpus(max_phrases: int = 40000) -> list[str]:
    """Training text: Mandarin phrases, tone-digit pinyin syllables and prompt English."""
    from pypinyin.phrases_dict import phrases_dict
    from pypinyin.pinyin_dict import pinyin_dict

    phrases = sorted(phrases_dict)[:max_phrases]
    chars = [chr(c) for c in sorted(pinyin_dict) if 0x4E00 <= c <= 0x9FFF][:8000]
    syllables = sorted({s for v in itertools.islice(phrases_dict.values(), 20000) for p in v for s in p})
    lines = [" ".join(phrases[i:i + 20]) for i in range(0, len(phrases), 20)]
    lines += ["".join(chars[i:i + 50]) for i in range(0, len(chars), 50)]
    lines += [" ".join(syllables)] + ENGLISH.split("\n") * 50
    lines += ["，。！？：；、“”（）《》 0123456789 ,.!?:;()[]\"'-"] * 20
    return lines


# Qwen2.5-Omni's chat layout; no whitespace control, so every newline below is one Qwen emits.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif part['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(vocab_size: int = 6000, out: Path = HERE) -> None:
    """Train the BPE, wrap it as a Qwen2.5-Omni processor and save it to `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from avcot.processor import processor_from_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    processor = processor_from_tokenizer(tok, chat_template=CHAT_TEMPLATE)
    out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out)
    print(f"wrote {out} (vocab {len(processor.tokenizer)})")


if __name__ == "__main__":
    build()
