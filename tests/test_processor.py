"""The embedded offline processor and loading a real one from a directory."""
from __future__ import annotations

import pytest

from avcot.processor import load_processor


def test_tiny_processor_has_qwen_special_tokens(tiny_processor):
    tok = tiny_processor.tokenizer
    for name in ("<|AUDIO|>", "<|VIDEO|>", "<|IMAGE|>", "<|vision_bos|>", "<|audio_bos|>", "<|im_end|>"):
        ids = tok(name, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{name} is split into {ids}"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_tiny_tokenizer_round_trips_mandarin_and_pinyin(tiny_processor):
    tok = tiny_processor.tokenizer
    for text in ("差拨和柴伯都读 chai1 bo1。", "Transcription: 实验室", "😀 rare 字符 ㊣"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    # Common characters are single tokens (the BPE was trained on Mandarin phrases).
    assert len(tok("实验", add_special_tokens=False)["input_ids"]) <= 2


def test_chat_template_matches_qwen_layout(tiny_processor):
    msgs = [{"role": "system", "content": "S"},
            {"role": "user", "content": [{"type": "video"}, {"type": "audio"}, {"type": "text", "text": "Q"}]}]
    text = tiny_processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|>"
                    "<|audio_bos|><|AUDIO|><|audio_eos|>Q<|im_end|>\n<|im_start|>assistant\n")


def test_saved_processor_reloads_from_a_directory(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    again = load_processor(str(tmp_path))
    text = "实验室 Transcription"
    assert again.tokenizer(text)["input_ids"] == tiny_processor.tokenizer(text)["input_ids"]
    assert again.feature_extractor.feature_size == 128


def test_bad_processor_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot load a Qwen2.5-Omni"):
        load_processor(str(tmp_path / "missing"))
    f = tmp_path / "file.bin"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        load_processor(str(f))
