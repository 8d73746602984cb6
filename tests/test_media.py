"""avcot.media on the committed fixtures, corrupt files and generated long/stereo inputs."""
from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avcot.media import (
    MediaError,
    Truncation,
    ablate_video,
    black_video,
    load_audio,
    load_audio_window,
    load_frames,
    load_frames_window,
    probe,
    random_video,
    truncation_of,
    uniform_indices,
    window_truncation,
)

SYNTH = Path(__file__).parent / "data" / "synth"
BAD = Path(__file__).parent / "data" / "bad"


def _rows() -> list[dict]:
    return [json.loads(line) for line in (SYNTH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def row() -> dict:
    return _rows()[0]


# ---------------------------------------------------------------- probe / audio on fixtures


def test_probe_fixture_mp4_and_wav(row):
    info = probe(SYNTH / row["video"])
    assert (info.has_audio, info.has_video) == (True, True)
    assert (info.width, info.height, info.fps) == (224, 224, 2.0)
    assert (info.sample_rate, info.channels) == (16000, 1)
    wav = probe(SYNTH / row["audio"])
    assert (wav.has_audio, wav.has_video, wav.sample_rate) == (True, False, 16000)
    assert wav.duration_s == pytest.approx(row["duration_s"], abs=1e-3)


def test_load_audio_wav_length_matches_duration(row):
    audio = load_audio(SYNTH / row["audio"])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(row["duration_s"] * 16000, rel=0.01)
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.05  # speech, not silence


def test_load_audio_from_mp4_matches_wav(row):
    wav = load_audio(SYNTH / row["audio"])
    mp4 = load_audio(SYNTH / row["video"])
    assert len(mp4) == pytest.approx(len(wav), rel=0.01)
    n = min(len(wav), len(mp4))
    # AAC is lossy, but the same speech at the same alignment correlates strongly.
    assert np.corrcoef(wav[:n], mp4[:n])[0, 1] > 0.9


def test_load_audio_other_rate_halves_length(row):
    full = load_audio(SYNTH / row["audio"])
    half = load_audio(SYNTH / row["audio"], sr=8000)
    assert len(half) == pytest.approx(len(full) / 2, rel=0.01)


def test_load_audio_window_is_exact_slice(row):
    full = load_audio(SYNTH / row["audio"])
    part = load_audio(SYNTH / row["audio"], offset_s=0.5, max_seconds=1.0)
    assert len(part) == 16000
    np.testing.assert_allclose(part, full[8000:24000], atol=1e-6)


def test_silent_audio_is_valid(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(8000, np.float32), 16000)
    audio = load_audio(path)
    assert audio.shape == (8000,) and not audio.any()


def test_stereo_44k_becomes_mono_16k_mean(tmp_path):
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 220 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([0.6 * tone, 0.2 * tone], axis=1), 44100, subtype="FLOAT")
    audio = load_audio(path)
    assert len(audio) == pytest.approx(16000, rel=0.01)
    # mean of the channels = 0.4 * tone; the peak of a 220 Hz sine survives resampling.
    assert np.abs(audio[1000:-1000]).max() == pytest.approx(0.4, abs=0.01)


def test_load_audio_rejects_bad_arguments(row):
    with pytest.raises(ValueError):
        load_audio(SYNTH / row["audio"], max_seconds=0)
    with pytest.raises(ValueError):
        load_audio(SYNTH / row["audio"], offset_s=-1)


# ---------------------------------------------------------------- frames


def test_load_frames_shapes(row):
    frames = load_frames(SYNTH / row["video"])
    assert frames.shape == (8, 112, 112, 3) and frames.dtype == np.uint8
    assert load_frames(SYNTH / row["video"], num_frames=4, size=56).shape == (4, 56, 56, 3)
    assert load_frames(SYNTH / row["video"], num_frames=2, size=(64, 96)).shape == (2, 64, 96, 3)


def test_load_frames_follow_uniform_indices(row):
    """Synthetic frames carry a red progress bar of width (k+1)/n: its length identifies the frame."""
    info = probe(SYNTH / row["video"])
    n_total = round(info.duration_s * info.fps)
    frames = load_frames(SYNTH / row["video"], num_frames=4, size=(224, 224))
    red = (frames[:, 1, :, 0] > 150) & (frames[:, 1, :, 1] < 100)  # [T, W] top row, red pixels
    widths = red.sum(axis=1)
    expected = [round(224 * (k + 1) / n_total) for k in uniform_indices(n_total, 4)]
    np.testing.assert_allclose(widths, expected, atol=3)


@pytest.mark.parametrize(
    ("n_total", "n", "expected"),
    [(10, 4, [1, 3, 6, 8]), (8, 8, [0, 1, 2, 3, 4, 5, 6, 7]), (2, 4, [0, 0, 1, 1]),
     (600, 3, [100, 300, 500]), (1, 3, [0, 0, 0])],
)
def test_uniform_indices_hand_checked(n_total, n, expected):
    # centre of segment k of n: floor((k + 0.5) * n_total / n), e.g. 10/4: 1.25, 3.75, 6.25, 8.75
    assert uniform_indices(n_total, n) == expected


def test_uniform_indices_rejects_empty():
    with pytest.raises(ValueError):
        uniform_indices(0, 4)
    with pytest.raises(ValueError):
        uniform_indices(10, 0)


# ---------------------------------------------------------------- bad files


def _header_only_wav(tmp_path: Path) -> Path:
    path = tmp_path / "header_only.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    return path


@pytest.mark.parametrize("loader", [load_audio, load_frames, probe])
@pytest.mark.parametrize("name", ["missing.mp4", "not_a_video.mp4", "empty.wav"])
def test_unreadable_files_raise_media_error_naming_file(loader, name):
    with pytest.raises(MediaError, match=name):
        loader(BAD / name)


@pytest.mark.parametrize("loader", [load_audio, load_frames])
def test_truncated_mp4_raises(loader):
    with pytest.raises(MediaError, match="truncated.mp4"):
        loader(BAD / "truncated.mp4")


def test_video_only_mp4_has_no_audio():
    with pytest.raises(MediaError, match=r"video_only\.mp4: has no audio stream"):
        load_audio(BAD / "video_only.mp4")
    assert load_frames(BAD / "video_only.mp4", num_frames=2).shape == (2, 112, 112, 3)


def test_wav_without_samples_is_empty_audio(tmp_path):
    with pytest.raises(MediaError, match=r"header_only\.wav: audio stream is empty"):
        load_audio(_header_only_wav(tmp_path))


def test_frames_from_audio_file_raise(row):
    with pytest.raises(MediaError, match="has no video stream"):
        load_frames(SYNTH / row["audio"])


# ---------------------------------------------------------------- long file


@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory) -> Path:
    """60 s, 10 fps grey ramp (luma 16 + 3 t) with a stereo 44.1 kHz sine."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (apt-get install -y ffmpeg)")
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "color=c=black:s=64x48:r=10:d=60,format=gray,geq=lum='16+3*T'",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=60",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-ac", "2", "-b:a", "64k", str(path)], check=True)
    return path


def test_long_audio_clipped_to_max_seconds(long_mp4):
    assert probe(long_mp4).duration_s == pytest.approx(60, abs=0.1)
    assert len(load_audio(long_mp4, max_seconds=5)) == 5 * 16000
    assert len(load_audio(long_mp4, offset_s=30, max_seconds=2)) == 2 * 16000


def _grey(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


def test_long_frames_clipped_to_max_seconds(long_mp4):
    # 100 frames in 10 s; uniform_indices(100, 4) = 12, 37, 62, 87 -> t = 1.2, 3.7, 6.2, 8.7 s.
    grey = _grey(load_frames(long_mp4, num_frames=4, max_seconds=10))
    np.testing.assert_allclose(grey, [16 + 3 * t for t in (1.2, 3.7, 6.2, 8.7)], atol=5)


def test_long_frames_without_limit_seek_over_whole_file(long_mp4):
    # 600 frames: 75, 225, 375, 525 -> t = 7.5, 22.5, 37.5, 52.5 s (reached by seeking).
    grey = _grey(load_frames(long_mp4, num_frames=4))
    np.testing.assert_allclose(grey, [16 + 3 * t for t in (7.5, 22.5, 37.5, 52.5)], atol=5)


# ---------------------------------------------------------------- ablations


def test_black_and_ablate_video():
    frames = np.full((4, 8, 8, 3), 200, np.uint8)
    other = np.full((4, 8, 8, 3), 7, np.uint8)
    assert not black_video(frames).any() and black_video(frames).shape == frames.shape
    assert ablate_video(frames, "none") is frames
    assert not ablate_video(frames, "black").any()
    assert (ablate_video(frames, "random", other) == 7).all()
    with pytest.raises(ValueError):
        ablate_video(frames, "random")
    with pytest.raises(ValueError):
        ablate_video(frames, "random", other[:2])
    with pytest.raises(ValueError):
        ablate_video(frames, "blur")


def test_random_video_picks_another_clip():
    ids = ["a", "b", "c"]
    rng = random.Random(0)
    picks = {random_video(ids, 1, rng) for _ in range(50)}
    assert picks == {0, 2}
    with pytest.raises(ValueError):
        random_video(["only"], 0, rng)


def test_probe_opens_an_unchanged_file_once_and_a_changed_one_again(tmp_path):
    """Probe results are reused per (file, size, mtime): checks, length keys and decodes share one open."""
    import os
    from unittest import mock

    import avcot.media as media

    rows = [json.loads(x) for x in (SYNTH / "manifest.jsonl").read_text().splitlines()]
    copy = tmp_path / "clip.wav"
    shutil.copy(SYNTH / rows[0]["audio"], copy)
    with mock.patch.object(media, "_open", wraps=media._open) as opened:
        first = probe(copy)
        assert probe(copy) == first and probe(str(copy)) == first
        assert opened.call_count == 1
        shutil.copy(SYNTH / rows[1]["audio"], copy)  # another clip written over it
        os.utime(copy, ns=(0, 12345))  # a different modification time whatever the clock resolution
        assert probe(copy) != first and opened.call_count == 2
    copy.unlink()
    with pytest.raises(MediaError, match="file not found"):
        probe(copy)


# ---------------------------------------------------------------- truncation notes


def test_audio_longer_than_window_carries_a_truncation_note(tmp_path):
    path = tmp_path / "three_s.wav"
    sf.write(path, np.full(3 * 16000, 0.1, np.float32), 16000)
    cut = load_audio_window(path, max_seconds=1.0)
    assert len(cut.samples) == 16000 and cut.sample_rate == 16000
    note = cut.truncation
    assert note == Truncation(str(path), "audio", pytest.approx(3.0), 1.0, 0.0)
    assert note.dropped_s == pytest.approx(2.0)
    assert "three_s.wav" in note.message and "3.0 s long" in note.message and "1.0 s" in note.message
    assert load_audio_window(path, offset_s=1.5, max_seconds=1.0).truncation.dropped_s == pytest.approx(0.5)
    # the whole file, or a window that reaches its end, cuts nothing
    assert load_audio_window(path).truncation is None
    assert load_audio_window(path, max_seconds=3.0).truncation is None
    assert load_audio_window(path, offset_s=2.0, max_seconds=1.0).truncation is None
    assert truncation_of(path, "audio", 1.0) == note  # same verdict from the header alone
    assert truncation_of(path, "audio", 30.0) is None


def test_window_truncation_slack():
    assert window_truncation("a.wav", "audio", 30.05, 30.0) is None  # container rounding, nothing audible lost
    assert window_truncation("a.wav", "audio", 30.2, 30.0).dropped_s == pytest.approx(0.2)
    assert window_truncation("a.wav", "audio", 720.0, None) is None


def test_long_file_truncation_notes(long_mp4):
    audio = load_audio_window(long_mp4, max_seconds=5)
    assert audio.truncation.stream == "audio" and audio.truncation.source_s == pytest.approx(60, abs=0.2)
    video = load_frames_window(long_mp4, num_frames=4, max_seconds=10)
    assert video.frames.shape == (4, 112, 112, 3)
    assert (video.truncation.stream, video.truncation.used_s) == ("video", 10.0)
    assert video.truncation.source_s == pytest.approx(60, abs=0.2)
    assert load_frames_window(long_mp4, num_frames=4).truncation is None
    assert truncation_of(long_mp4, "video", 10).source_s == pytest.approx(60, abs=0.2)
