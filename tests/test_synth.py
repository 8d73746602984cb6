"""avcot.synth: sentence tables, pinyin, frames, MCQ, tool errors, the committed fixture set, and
(when espeak-ng and ffmpeg are installed) real generation and its determinism."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from avcot import synth, synth_media
from avcot.records import LETTERS, McqItem
from avcot.synth import (
    CUES,
    SynthError,
    Variation,
    all_contents,
    generate,
    homophone_pairs,
    make_mcq,
    make_sentences,
    render_frames,
    tone_pinyin,
    write_clips,
)

SYNTH = Path(__file__).parent / "data" / "synth"
HAVE_TOOLS = shutil.which("espeak-ng") is not None and shutil.which("ffmpeg") is not None


def _toneless(p: str) -> str:
    return "".join(ch for ch in p if not ch.isdigit())


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- pure helpers


def test_tone_pinyin_hand_checked():
    assert tone_pinyin("差拨") == "chai1 bo1"
    assert tone_pinyin("你好吗？") == "ni3 hao3 ma5"  # neutral tone 5, punctuation dropped
    assert tone_pinyin("实验室") == "shi2 yan4 shi4"


def test_homophone_pairs_are_toneless_identical():
    pairs = homophone_pairs()
    assert len(pairs) >= 10
    assert len({p.key for p in pairs}) == len(pairs)
    for pair in pairs:
        a, b = pair.words
        assert a != b
        assert (tone_pinyin(a), tone_pinyin(b)) == pair.pinyin  # table agrees with pypinyin
        assert _toneless(pair.pinyin[0]) == _toneless(pair.pinyin[1])
        for template in pair.templates:
            assert template.count("{w}") == 1
        for word, scene in zip(pair.words, pair.scenes):
            assert word in scene.sign and word not in scene.legend


def test_make_sentences_deterministic_and_mixed():
    specs = make_sentences(12, seed=0)
    assert specs == make_sentences(12, seed=0)
    assert [s.text for s in specs] != [s.text for s in make_sentences(12, seed=1)]
    assert Counter(s.cue for s in specs) == {c: 3 for c in CUES}  # shuffled blocks of four
    assert len({s.id for s in specs}) == 12


def test_sentence_specs_are_consistent():
    pairs = {p.key: p for p in homophone_pairs()}
    for spec in make_sentences(40, seed=3):
        pair = pairs[spec.pair_key]
        assert {spec.target, spec.competitor} == set(pair.words)
        assert spec.target in spec.text and spec.pinyin == tone_pinyin(spec.text)
        assert pair.pinyin[pair.words.index(spec.target)] in spec.pinyin
        assert spec.sentence_id.startswith(pair.key + "-s")
        if spec.cue == "conflict":  # subtitle shows the competitor; the reference stays the spoken text
            assert spec.screen_text == spec.text.replace(spec.target, spec.competitor)
        elif spec.cue == "subtitle":
            assert spec.screen_text == spec.text
        elif spec.cue == "background":
            assert spec.target in spec.screen_text


def test_sentence_id_shared_by_both_words_of_a_template():
    specs = make_sentences(40, seed=0)  # all 10 pairs x 2 templates x 2 words
    by_sentence: dict[str, set[str]] = {}
    for s in specs:
        by_sentence.setdefault(s.sentence_id, set()).add(s.target)
    assert len(by_sentence) == 20 and all(len(words) == 2 for words in by_sentence.values())


def test_make_sentences_rejects_nonpositive():
    with pytest.raises(ValueError):
        make_sentences(0, seed=0)


def test_render_frames_size_count_and_cues():
    specs = {s.cue: s for s in make_sentences(4, seed=0)}
    frames = render_frames(specs["background"], (160, 120), 3)
    assert len(frames) == 3 and all(f.size == (160, 120) and f.mode == "RGB" for f in frames)
    arrays = [np.asarray(f) for f in frames]
    assert not np.array_equal(arrays[0], arrays[2])  # progress bar differs
    assert np.array_equal(arrays[0][10:], arrays[2][10:])  # the scene itself is still
    pictures = {cue: np.asarray(render_frames(s, (112, 112), 1)[0]) for cue, s in specs.items()}
    assert len({p.tobytes() for p in pictures.values()}) == 4
    # subtitle-style cues draw a black band at the bottom; the background cue does not
    assert pictures["subtitle"][-2, 0].sum() == 0 and pictures["background"][-2, 0].sum() > 0
    with pytest.raises(ValueError):
        render_frames(specs["scene"], (112, 112), 0)


def test_make_mcq_items_are_answerable():
    specs = make_sentences(12, seed=0)
    paths = {s.id: (f"clips/{s.id}.mp4", f"clips/{s.id}.wav") for s in specs}
    items = make_mcq(specs, paths, seed=0)
    by_id = {s.id: s for s in specs}
    n_conflict = sum(s.cue == "conflict" for s in specs)
    assert len(items) == 3 * len(specs) - n_conflict
    for item in items:
        spec = by_id[item.id.rsplit("-", 1)[0]]
        assert len(item.options) == 4 and len(set(item.options)) == 4 and item.answer in LETTERS
        chosen = item.options[LETTERS.index(item.answer)]
        if item.modality == "a":
            assert chosen == spec.target and spec.competitor not in item.options and item.audio
        elif item.modality == "av":
            assert chosen == spec.target and spec.competitor in item.options and spec.cue != "conflict"
        elif spec.cue == "conflict":
            assert chosen == spec.competitor  # the subtitle shows the competitor
        elif spec.cue == "scene":
            assert chosen == spec.scene.legend
        else:
            assert chosen == spec.target
    assert make_mcq(specs, paths, seed=0) == items
    assert Counter(it.answer for it in items).keys() > {"A"}  # answers are shuffled


# ---------------------------------------------------------------- missing tools


def test_missing_tool_names_the_package(monkeypatch):
    monkeypatch.setattr(synth_media.shutil, "which", lambda name: None)
    with pytest.raises(SynthError, match=r"espeak-ng not found.*apt-get install -y espeak-ng"):
        generate(Path("/nonexistent-out"), 1, 0, progress=False)
    with pytest.raises(SynthError, match=r"ffmpeg.*apt-get install -y ffmpeg"):
        synth_media.require_tool("ffmpeg", "ffmpeg")


def test_missing_font_names_the_package(monkeypatch):
    synth_media.find_cjk_font.cache_clear()
    monkeypatch.setattr(synth_media.shutil, "which", lambda name: None)
    monkeypatch.setattr(synth_media.glob, "glob", lambda *a, **k: [])
    try:
        with pytest.raises(SynthError, match="fonts-noto-cjk"):
            synth_media.find_cjk_font()
    finally:
        synth_media.find_cjk_font.cache_clear()


# ---------------------------------------------------------------- committed fixture set


def test_fixture_manifest_matches_generator():
    rows = _jsonl(SYNTH / "manifest.jsonl")
    specs = make_sentences(12, seed=0)
    assert [r["id"] for r in rows] == [s.id for s in specs]
    for row, spec in zip(rows, specs):
        assert (row["text"], row["pinyin"], row["cue"], row["target"], row["competitor"], row["sentence_id"]) == (
            spec.text, spec.pinyin, spec.cue, spec.target, spec.competitor, spec.sentence_id)


def test_fixture_files_exist_and_are_small():
    rows = _jsonl(SYNTH / "manifest.jsonl")
    assert Counter(r["cue"] for r in rows)["conflict"] >= 2 and {r["cue"] for r in rows} == set(CUES)
    for r in rows:
        assert not Path(r["video"]).is_absolute() and (SYNTH / r["video"]).is_file()
        assert (SYNTH / r["audio"]).is_file() and r["audio"].endswith(".wav")
    total = sum(p.stat().st_size for p in SYNTH.rglob("*") if p.is_file())
    assert total <= 3 * 1024 * 1024


def test_fixture_mp4_carries_audio():
    from avcot.media import probe

    for r in _jsonl(SYNTH / "manifest.jsonl"):
        info = probe(SYNTH / r["video"])
        assert info.has_audio and info.has_video and info.sample_rate == 16000
        assert info.duration_s == pytest.approx(r["duration_s"], abs=0.5 + 1e-6)  # 2 fps frame granularity


def test_fixture_mcq_rows_are_mcq_items():
    rows = _jsonl(SYNTH / "mcq.jsonl")
    items = [McqItem(**{**r, "options": tuple(r["options"])}) for r in rows]
    assert {it.modality for it in items} == {"a", "v", "av"}
    for it in items:
        media = it.video or it.audio
        assert media and (SYNTH / media).is_file()


# ---------------------------------------------------------------- real generation (needs espeak-ng + ffmpeg)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not HAVE_TOOLS, reason="espeak-ng and ffmpeg not installed (apt-get install -y espeak-ng ffmpeg)")
def test_generate_is_deterministic_and_loadable(tmp_path):
    from avcot.media import load_audio, load_frames

    a = generate(tmp_path / "a", 2, seed=5, mcq=True, size=(112, 112), progress=False)
    b = generate(tmp_path / "b", 2, seed=5, mcq=True, size=(112, 112), progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # media bytes too
    rows = _jsonl(a)
    assert [r["text"] for r in rows] == [s.text for s in make_sentences(2, seed=5)]
    for r in rows:
        audio = load_audio(a.parent / r["audio"])
        assert len(audio) == pytest.approx(r["duration_s"] * 16000, rel=0.01)
        assert r["duration_s"] > 1.0 and np.abs(audio).max() > 0.05  # espeak actually spoke
        assert load_frames(a.parent / r["video"], num_frames=2).shape == (2, 112, 112, 3)


@pytest.mark.skipif(not HAVE_TOOLS, reason="espeak-ng and ffmpeg not installed (apt-get install -y espeak-ng ffmpeg)")
def test_cli_pads_to_min_seconds(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--n", "1", "--seed", "2", "--seconds", "6"]) == 0
    row = _jsonl(tmp_path / "manifest.jsonl")[0]
    assert row["duration_s"] == pytest.approx(6.0, abs=1e-3)
    assert not (tmp_path / "mcq.jsonl").exists()
    assert str(tmp_path / "manifest.jsonl") in capsys.readouterr().out


# ---------------------------------------------------------------- renderings (learning benchmark)


def test_all_contents_covers_every_content_once_per_render():
    cues = ("background", "subtitle", "scene")
    specs = all_contents(3, seed=1, cues=cues)
    pairs = homophone_pairs()
    n_contents = sum(len(p.templates) for p in pairs) * 2 * len(cues)
    assert len(specs) == 3 * n_contents
    assert len({s.id for s in specs}) == len(specs)
    per_content = Counter((s.sentence_id, s.target, s.cue) for s in specs)
    assert set(per_content.values()) == {3}
    assert len({s.variation for s in specs}) == len(specs)  # every rendering differs
    for s in specs:
        assert s.text.replace(s.target, "") != s.text and s.competitor != s.target
        assert s.pinyin == tone_pinyin(s.text)
        assert 110 <= s.variation.speed <= 170 and 30 <= s.variation.pitch <= 70
    assert all_contents(3, seed=1, cues=cues) == specs  # seeded
    assert [s.variation for s in all_contents(3, seed=2, cues=cues)] != [s.variation for s in specs]


def test_all_contents_rejects_bad_arguments():
    with pytest.raises(ValueError, match="renders"):
        all_contents(0, seed=0)
    with pytest.raises(ValueError, match="unknown cue"):
        all_contents(1, seed=0, cues=("sign",))


def test_variation_moves_and_tints_the_picture_but_identity_is_plain():
    spec = next(s for s in make_sentences(8, seed=0) if s.cue == "background")
    plain = np.asarray(render_frames(spec, (112, 112), 1)[0])
    same = np.asarray(render_frames(replace(spec, variation=Variation()), (112, 112), 1)[0])
    assert np.array_equal(plain, same)
    moved = np.asarray(render_frames(replace(spec, variation=Variation(dx=0.05, tint=(20, -20, 0))), (112, 112), 1)[0])
    assert moved.shape == plain.shape and not np.array_equal(moved, plain)
    corner = moved[-1, -1].astype(int) - plain[-1, -1].astype(int)  # the background shows there in both
    assert list(corner) == [20, -20, 0]


@pytest.mark.skipif(not HAVE_TOOLS, reason="espeak-ng and ffmpeg not installed (apt-get install -y espeak-ng ffmpeg)")
def test_write_clips_threads_give_the_same_bytes_and_pitch_changes_audio(tmp_path):
    from avcot.media import load_audio

    specs = all_contents(1, seed=3, cues=("scene",))[:3]
    a = write_clips(specs, tmp_path / "a", size=(112, 112), workers=1, progress=False)
    b = write_clips(specs, tmp_path / "b", size=(112, 112), workers=3, progress=False)
    assert a.read_bytes() == b.read_bytes() and _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert [r["id"] for r in _jsonl(a)] == [s.id for s in specs]  # spec order kept
    low = replace(specs[0], id="low", variation=Variation(pitch=20))
    high = replace(specs[0], id="high", variation=Variation(pitch=80))
    write_clips([low, high], tmp_path / "c", size=(112, 112), progress=False)
    wav = {k: load_audio(tmp_path / "c" / "clips" / f"{k}.wav") for k in ("low", "high")}
    assert not np.array_equal(wav["low"][:8000], wav["high"][:8000])
    with pytest.raises(ValueError, match="pitch"):
        synth_media.synthesize_speech("ni3 hao3", tmp_path / "x.wav", pitch=120)


def test_all_contents_voices_are_drawn_from_the_given_speakers():
    voices = ((120, 40), (160, 60))
    specs = all_contents(2, seed=0, cues=("scene",), voices=voices)
    assert {(s.variation.speed, s.variation.pitch) for s in specs} == set(voices)
