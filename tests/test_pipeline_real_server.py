"""Both pipelines against a real OpenAI-compatible server this project did not write: `transformers serve`
on a tiny random-weight Qwen2 LM built here (its replies are garbage), through a recording pass-through
that keeps what went over the wire. Stub servers cover 429/500/timeouts/refusals elsewhere."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai_stub import RecordingProxy, free_port

from avcot.pipeline import run_avrt, run_cavsr
from avcot.pipeline.config import config_from_dict

SYNTH = Path(__file__).parent / "data" / "synth"
CLI = Path(sys.executable).parent / "transformers"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CLI.exists(), reason="transformers CLI not installed"),
              pytest.mark.skipif(any(__import__("importlib").util.find_spec(m) is None
                                     for m in ("fastapi", "uvicorn", "openai")),
                                 reason="transformers serve needs the serving extras (fastapi, uvicorn, openai)")]


@pytest.fixture(scope="module")
def real_server(tmp_path_factory, tiny_processor):
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    model = tmp_path_factory.mktemp("tiny_lm")
    tok = PreTrainedTokenizerFast(tokenizer_object=tiny_processor.tokenizer.backend_tokenizer, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", chat_template=tiny_processor.chat_template)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(model)
    tok.save_pretrained(model)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path_factory.mktemp("hf_home"))}
    log = (model / "serve.log").open("w")
    proc = subprocess.Popen([str(CLI), "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT, env=env)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(root + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (model / "serve.log").read_text()[-2000:]
            time.sleep(1)
        else:
            pytest.fail("transformers serve did not come up: " + (model / "serve.log").read_text()[-2000:])
        proxy = RecordingProxy(root)
        yield proxy, str(model)
        proxy.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(model, ignore_errors=True)


def _copy(src: Path, dst: Path, n: int, drop=()) -> Path:
    rows = [json.loads(x) for x in src.read_text().splitlines()[:n]]
    for r in rows:
        for k in ("video", "audio", "image"):
            if r.get(k):
                r[k] = str(src.parent / r[k])
        for k in drop:
            r.pop(k, None)
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return dst


def _config(url: str, model: str, roles: dict, **extra) -> object:
    chat = {"kind": "openai", "base_url": url, "model": model, "api_key_env": None, "max_tokens": 12,
            "max_retries": 0, "timeout_s": 120}
    # a second entry with shorter replies: two "recognisers" on one greedy model must disagree
    chats = {"real": chat, "real_short": {**chat, "max_tokens": 6}}
    return config_from_dict({"progress": False, "concurrency": 2, "chats": chats,
                             "roles": {r: {"kind": "chat", "chat": "real", **o} for r, o in roles.items()}, **extra})


def _types(req: dict) -> list[str]:
    content = req["body"]["messages"][-1]["content"]
    return ["text"] if isinstance(content, str) else [p["type"] for p in content]


def _check(counts, out: Path, n: int) -> list[dict]:
    assert counts.rows_in == n == counts.kept + counts.filtered + counts.rejected + counts.failed
    assert counts.failed == 0
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert all(r["reason"] for r in rejects)
    return rejects


def test_cavsr_with_and_without_reference_and_avrt_on_a_real_server(real_server, tmp_path):
    proxy, model = real_server
    # with reference: simulated ASR, the real model captions frames (image parts) and writes traces
    # hearing the audio (audio part); its garbage traces are rejects at validate
    cfg = _config(proxy.url, model, {"caption": {}, "annotator": {}}, cavsr={"ocr_frames": 1, "caption_frames": 2})
    ref = _copy(SYNTH / "manifest.jsonl", tmp_path / "ref.jsonl", 3)
    counts = run_cavsr(ref, tmp_path / "ref", cfg)
    rejects = _check(counts, tmp_path / "ref", 3)
    kinds = {tuple(_types(r)) for r in proxy.requests}
    assert ("image_url", "image_url", "text") in kinds and ("input_audio", "text") in kinds
    assert all(r["status"] == 200 for r in proxy.requests)  # the real server accepted every request
    assert {r["stage"] for r in rejects} <= {"validate"} and counts.rejected >= 1
    n = len(proxy.requests)
    again = run_cavsr(ref, tmp_path / "ref", cfg)
    assert (again.kept, again.rejected) == (counts.kept, counts.rejected) and len(proxy.requests) == n  # resumed

    # without reference: the real model is the second recogniser (audio part) and the judge (text)
    raw = _copy(SYNTH / "manifest.jsonl", tmp_path / "raw.jsonl", 3, drop=("text", "target", "competitor"))
    cfg = _config(proxy.url, model, {"asr_a": {}, "asr_b": {"chat": "real_short"}, "judge": {}})
    counts = run_cavsr(raw, tmp_path / "raw", cfg)
    rejects = _check(counts, tmp_path / "raw", 3)
    assert all(("input_audio", "text") == tuple(_types(r)) for r in proxy.requests[n:n + 6])
    assert counts.rejected >= 1  # the judge saw disagreeing hypotheses and answered garbage
    assert all(r["stage"] == "judge" and "KEEP nor DISCARD" in r["reason"] for r in rejects)

    # AVRT: frames to the visual teacher, audio to the audio teacher, text to the merger (garbage -> reject)
    m = len(proxy.requests)
    cfg = _config(proxy.url, model, {"visual_teacher": {}, "audio_teacher": {}, "merger": {}},
                  avrt={"visual_frames": 2, "require_both_correct": False})
    mcq = _copy(SYNTH / "mcq.jsonl", tmp_path / "mcq.jsonl", 3)
    counts = run_avrt(mcq, tmp_path / "avrt", cfg)
    rejects = _check(counts, tmp_path / "avrt", 3)
    assert all(r["stage"] == "merge" and "merger reply" in r["reason"] for r in rejects)
    kinds = {tuple(_types(r)) for r in proxy.requests[m:]}
    assert ("text",) in kinds and any("image_url" in k for k in kinds) and any("input_audio" in k for k in kinds)
