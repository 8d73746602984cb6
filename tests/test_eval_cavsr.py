"""CAVSR eval: ablation batches (black / random / audio_only) and an end-to-end `python -m avcot.eval cavsr`."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from avcot.data.rows import RejectLog
from avcot.eval.cavsr import CavsrEvalSettings, parse_ablations, read_condition
from avcot.eval.runner import predict_batches
from avcot.model import base_and_adapter, checkpoint_kind
from avcot.processor import load_processor

SYNTH = Path(__file__).parent / "data" / "synth"
ROOT = Path(__file__).resolve().parents[1]
# Qwen2-VL normalisation (OpenAI CLIP mean/std): a black pixel becomes -mean/std per channel.
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """The first three committed synthetic clips, media paths made absolute."""
    rows = [json.loads(x) for x in (SYNTH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:3]]
    for r in rows:
        r["video"], r["audio"] = str(SYNTH / r["video"]), str(SYNTH / r["audio"])
    path = tmp_path_factory.mktemp("cavsr") / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def _batch(manifest: Path, out: Path, condition: str) -> dict:
    processor, rejects = load_processor("tiny"), RejectLog(None)
    data = read_condition(CavsrEvalSettings(data=str(manifest), out=str(out)), condition, processor, rejects)
    ((examples, batch),) = list(predict_batches(data.dataset, processor.tokenizer.pad_token_id, 3, rejects))
    assert [e.id for e in examples] == ["synth-s0-0000", "synth-s0-0001", "synth-s0-0002"]
    return batch


def _per_clip(batch: dict) -> list[torch.Tensor]:
    sizes = [int(t * h * w) for t, h, w in batch["video_grid_thw"]]
    return list(torch.split(batch["pixel_values_videos"], sizes))


def test_black_video_is_all_zero_frames(manifest, tmp_path):
    batch = _batch(manifest, tmp_path, "black")
    pv = batch["pixel_values_videos"]  # [patches, 3 * T * 14 * 14], channel-major per patch
    per_channel = pv.view(pv.shape[0], 3, -1)
    expected = (-CLIP_MEAN / CLIP_STD).view(1, 3, 1).expand_as(per_channel)
    assert torch.allclose(per_channel, expected, atol=1e-5)
    assert (batch["attention_mask"][:, -1] == 1).all()  # left-padded: every row ends on a real token


def test_random_video_is_another_clips_frames_never_its_own(manifest, tmp_path):
    true = _per_clip(_batch(manifest, tmp_path, "true"))
    rand = _per_clip(_batch(manifest, tmp_path, "random"))
    assert not torch.equal(true[0], true[1]) and not torch.equal(true[1], true[2])
    for i, frames in enumerate(rand):
        assert not torch.equal(frames, true[i])
        assert any(torch.equal(frames, true[j]) for j in range(3) if j != i)


def test_audio_only_has_no_video_tokens(manifest, tmp_path):
    true = _batch(manifest, tmp_path, "true")
    audio = _batch(manifest, tmp_path, "audio_only")
    from avcot.processor import load_processor

    video_id = load_processor("tiny").tokenizer.convert_tokens_to_ids("<|VIDEO|>")
    assert (true["input_ids"] == video_id).sum(dim=1).tolist() == [32, 32, 32]  # 4 frames of 112x112
    assert (audio["input_ids"] == video_id).sum().item() == 0
    assert "pixel_values_videos" not in audio and "input_features" in audio


def test_parse_ablations_and_checkpoint_kind(tmp_path):
    assert parse_ablations("black, random,audio_only,true,black") == ("black", "random", "audio_only")
    assert parse_ablations("") == ()
    with pytest.raises(ValueError, match="unknown ablation"):
        parse_ablations("blurry")
    assert base_and_adapter(None, "tiny") == ("tiny", None) and base_and_adapter("none", "tiny") == ("tiny", None)
    with pytest.raises(FileNotFoundError, match="neither adapter_config.json"):
        checkpoint_kind(str(tmp_path))


def test_end_to_end_cli_with_saved_adapter(manifest, tmp_path):
    from avcot.model import LoraSettings, apply_lora, load_thinker

    adapter = tmp_path / "adapter"
    apply_lora(load_thinker("tiny"), LoraSettings()).save_pretrained(str(adapter))
    out = tmp_path / "eval"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "avcot.eval", "cavsr", "--ckpt", str(adapter), "--data", str(manifest), "--out",
         str(out), "--ablations", "black,random,audio_only", "--max-new-tokens", "8", "--batch-size", "3",
         "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert elapsed < 60, f"eval took {elapsed:.1f}s"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in metrics["cer_by_ablation"]] == ["true", "black", "random", "audio_only"]
    assert all(s["n"] == 3 for s in metrics["cer_by_ablation"])
    assert metrics["run"]["ckpt"] == str(adapter)
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(preds) == 12 and {p["ablation"] for p in preds} == {"true", "black", "random", "audio_only"}
    for p in preds:  # per-sample counts add up to the stored rate
        assert p["cer"] == pytest.approx((p["substitutions"] + p["deletions"] + p["insertions"]) / p["ref_len"])
    with Image.open(out / "cer_by_ablation.png") as im:
        im.verify()
    assert "## Worst" in (out / "report.md").read_text(encoding="utf-8")
