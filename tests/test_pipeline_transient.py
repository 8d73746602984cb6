"""Transient vs permanent failures against a flaky loopback chat server: what is stored, what is retried.

A row that failed for a transient reason (server down, timeout, 429/5xx after the retries) must stay
pending and be retried by the next run; a permanent answer (HTTP 400, a reply the stage rejects) is
stored and never asked again; speed and retry settings never discard stored answers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_stub import ENV, KEY, FakeServer, free_port

from avcot.pipeline.__main__ import EXIT_STALLED, main
from avcot.pipeline.cavsr import judge_stage
from avcot.pipeline.config import CavsrSettings, RoleFactory, config_from_dict
from avcot.pipeline.rows import CavsrRow
from avcot.pipeline.runner import Stage, run_stage
from avcot.pipeline.store import StageStore

ROOT = Path(__file__).resolve().parents[1]
SYNTH = ROOT / "tests" / "data" / "synth"
JUDGE = Stage("judge", judge_stage, "judge", CavsrSettings(), CavsrRow)


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    s = FakeServer()
    s.default_reply = "KEEP: homophones 实验/试验"
    yield s
    s.close()


def _rows(n: int) -> list[CavsrRow]:
    return [CavsrRow(id=f"r{i}", order=i, source="in.jsonl", video=None, audio="a.wav", text="这次实验",
                     asr_a=f"这次实验{i}", asr_b=f"这次试验{i}") for i in range(n)]


def _config(url: str, run: dict | None = None, **chat):
    endpoint = {"kind": "openai", "base_url": url, "model": "m", "api_key_env": ENV, "max_retries": 1,
                "backoff_s": 0.0, "timeout_s": 5}
    return config_from_dict({"progress": False, "concurrency": 1, "shard_size": 1, **(run or {}),
                             "chats": {"strong": {**endpoint, **chat}},
                             "roles": {"judge": {"kind": "chat", "chat": "strong"}}})


def _judge(tmp_path: Path, config, rows: list[CavsrRow]):
    return run_stage(JUDGE, rows, tmp_path, config, RoleFactory(config))


def test_429_then_500_leaves_the_row_pending_and_the_rerun_completes_it(server, tmp_path):
    server.failures = [429, 500]  # both attempts of the first run (max_retries=1) fail
    first = _judge(tmp_path, _config(server.url), _rows(1))
    (out,) = first.outcomes
    assert out.status == "failed" and out.failure == f"HTTP 500 at {server.url}/chat/completions"
    assert StageStore(tmp_path, "judge").load() == {}  # nothing stored: the row is still pending
    assert len(server.requests) == 2

    second = _judge(tmp_path, _config(server.url), _rows(1))
    assert [o.status for o in second.outcomes] == ["kept"] and second.attempted == 1
    assert len(server.requests) == 3
    third = _judge(tmp_path, _config(server.url), _rows(1))
    assert third.attempted == 0 and len(server.requests) == 3  # now stored: no request


def test_http_400_is_a_stored_permanent_reject(server, tmp_path):
    server.failures = [400]
    (out,) = _judge(tmp_path, _config(server.url), _rows(1)).outcomes
    assert out.status == "rejected" and "HTTP 400" in out.reason
    again = _judge(tmp_path, _config(server.url), _rows(1))
    assert again.outcomes == [out] and again.attempted == 0
    assert len(server.requests) == 1  # the rerun asked nothing


def test_unparseable_reply_is_a_stored_permanent_reject(server, tmp_path):
    server.replies = ["no verdict here"]
    (out,) = _judge(tmp_path, _config(server.url), _rows(1)).outcomes
    assert out.status == "rejected" and "neither KEEP nor DISCARD" in out.reason
    _judge(tmp_path, _config(server.url), _rows(1))
    assert len(server.requests) == 1


def test_timeout_is_transient(server, tmp_path):
    server.delay = 0.5
    (out,) = _judge(tmp_path, _config(server.url, timeout_s=0.1, max_retries=0), _rows(1)).outcomes
    assert out.status == "failed" and out.failure.startswith("timeout at ") and "ReadTimeout" in out.reason
    server.delay = 0.0
    (again,) = _judge(tmp_path, _config(server.url, timeout_s=0.1, max_retries=0), _rows(1)).outcomes
    assert again.status == "kept" and len(server.requests) == 2


def test_missing_api_key_is_not_stored(server, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV)
    (out,) = _judge(tmp_path, _config(server.url), _rows(1)).outcomes
    assert out.status == "failed" and ENV in out.failure and not server.requests
    monkeypatch.setenv(ENV, KEY)  # fixing the environment is enough: the row was not cached as rejected
    (again,) = _judge(tmp_path, _config(server.url), _rows(1)).outcomes
    assert again.status == "kept" and len(server.requests) == 1


def test_speed_and_retry_settings_keep_the_stored_answers(server, tmp_path):
    first = _judge(tmp_path, _config(server.url), _rows(3))
    assert [o.status for o in first.outcomes] == ["kept"] * 3 and len(server.requests) == 3
    faster = _config(server.url, {"concurrency": 4, "shard_size": 8}, timeout_s=30, max_retries=7, backoff_s=0.5,
                     max_backoff_s=9, jitter=0.1, requests_per_second=50, max_concurrency=3)
    again = _judge(tmp_path, faster, _rows(3))
    assert again.outcomes == first.outcomes and again.attempted == 0
    assert len(server.requests) == 3  # no new request
    other_model = _judge(tmp_path, _config(server.url, model="m2"), _rows(3))
    assert other_model.attempted == 3 and len(server.requests) == 6  # what the answer depends on still counts


def _synth_manifest(tmp_path: Path, n: int) -> Path:
    rows = []
    for line in (SYNTH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:n]:
        row = json.loads(line)
        row["video"], row["audio"] = str(SYNTH / row["video"]), str(SYNTH / row["audio"])
        rows.append(json.dumps(row, ensure_ascii=False))
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _yaml(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "flaky.yaml"
    path.write_text(f"""cavsr: {{ocr_frames: 1, caption_frames: 2}}
chats:
  strong: {{kind: openai, base_url: "{url}", model: m, api_key_env: {ENV}, max_retries: 1, backoff_s: 0.0}}
roles:
  judge: {{kind: chat, chat: strong}}
""", encoding="utf-8")
    return path


def test_cli_server_down_exits_nonzero_then_rerun_completes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, KEY)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    manifest, config, out = _synth_manifest(tmp_path, 2), _yaml(tmp_path, url), tmp_path / "out"
    argv = ["cavsr", "--input", str(manifest), "--out", str(out), "--config", str(config), "--no-progress"]

    assert main(argv) == EXIT_STALLED  # nobody listens on the port: connection refused
    err = capsys.readouterr().err
    assert "2 of 2 row(s) failed" in err and f"connection failed at {url}/chat/completions" in err
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(f["stage"], f["kind"]) for f in failed] == [("judge", f"connection failed at {url}/chat/completions")] * 2
    assert (out / "rejects.jsonl").read_text() == ""  # pending, not rejected
    assert json.loads((out / "counts.json").read_text())["failed"] == 2

    server = FakeServer(port)  # the endpoint comes up on the same address: same config, same keys
    server.default_reply = "KEEP: homophones"
    try:
        assert main(argv) == 0
    finally:
        server.close()
    assert len(server.requests) == 2  # the pending rows were retried
    assert "rows_in=2 kept=2 filtered=0 rejected=0 failed=0" in capsys.readouterr().out
    assert (out / "failed.jsonl").read_text() == ""
    assert [json.loads(x)["id"] for x in (out / "sft.jsonl").read_text().splitlines()] == \
        [json.loads(x)["id"] for x in manifest.read_text().splitlines()]


def test_partial_transient_failure_exits_zero_and_says_what_is_pending(server, tmp_path, capsys):
    manifest, config, out = _synth_manifest(tmp_path, 2), _yaml(tmp_path, server.url), tmp_path / "out"
    server.failures = [503, 503]  # the first row's two attempts; the second row gets an answer
    argv = ["cavsr", "--input", str(manifest), "--out", str(out), "--config", str(config), "--no-progress",
            "--concurrency", "1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "1 of 2 row(s) failed" in err and "rerun the same command" in err and "HTTP 503" in err
    counts = json.loads((out / "counts.json").read_text())
    assert (counts["kept"], counts["failed"], counts["stalled"]) == (1, 1, [])
