"""A role's prompt/parser version is part of its resume identity: a changed prompt is asked again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_stub import ENV, KEY, FakeServer

from avcot.pipeline import chat_roles, rules
from avcot.pipeline.cavsr import cavsr_stages
from avcot.pipeline.config import ROLE_KINDS, RoleFactory, config_from_dict
from avcot.pipeline.rows import load_rows
from avcot.pipeline.runner import run_stages

SYNTH = Path(__file__).resolve().parent / "data" / "synth"
CHAT_ROLES = {"judge": {"kind": "chat", "chat": "strong"}, "annotator": {"kind": "chat", "chat": "strong"},
              "merger": {"kind": "chat", "chat": "strong"}, "ocr": {"kind": "chat", "chat": "strong"}}


def _config(url: str = "http://127.0.0.1:9/v1", roles: dict | None = None):
    return config_from_dict({"progress": False,
                             "chats": {"strong": {"kind": "openai", "base_url": url, "model": "m",
                                                  "api_key_env": ENV, "backoff_s": 0.01}},
                             "roles": CHAT_ROLES if roles is None else roles})


def _identities(config) -> dict[str, str]:
    return {role: config.role_identity(role) for role in ROLE_KINDS}


def test_changed_judge_prompt_changes_only_the_judge_identity(monkeypatch):
    config = _config()
    before = _identities(config)
    monkeypatch.setattr(chat_roles, "judge_prompt", lambda a, b: f"Are {a} and {b} homophones? KEEP or DISCARD.")
    after = _identities(config)
    assert after["judge"] != before["judge"]
    assert {r: i for r, i in after.items() if r != "judge"} == {r: i for r, i in before.items() if r != "judge"}


@pytest.mark.parametrize("role, cls", [("judge", chat_roles.ChatJudge), ("annotator", chat_roles.ChatTraceWriter),
                                       ("merger", chat_roles.ChatMerger)])
def test_bumped_parser_version_changes_the_identity(monkeypatch, role, cls):
    config = _config()
    before = config.role_identity(role)
    monkeypatch.setattr(cls, "version", staticmethod(lambda: "parser:v99"))
    assert config.role_identity(role) != before
    assert "parser:v99" in config.role_identity(role)


def test_rule_backend_version_is_in_the_identity(monkeypatch):
    config = config_from_dict({})
    before = config.role_identity("annotator")
    monkeypatch.setattr(rules.RuleTraceWriter, "identity", "rule_trace:v99")
    assert config.role_identity("annotator") != before
    # the delegating rule teacher follows the version of the role it uses
    visual = config.role_identity("visual_teacher")
    monkeypatch.setattr(rules.RuleJudge, "identity", "rule_judge:v99")
    assert config.role_identity("visual_teacher") == visual


def test_built_backend_reports_the_same_version(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    config = _config()
    judge = RoleFactory(config).get("judge")
    assert judge.identity.startswith(chat_roles.ChatJudge.version() + "(")
    assert chat_roles.ChatJudge.version() in config.role_identity("judge")


def test_rerun_after_a_judge_prompt_change_recomputes_the_judge_stage_only(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, KEY)
    server = FakeServer()
    try:
        server.default_reply = "The two readings are homophones.\nVERDICT: KEEP"
        config = _config(server.url, roles={"judge": {"kind": "chat", "chat": "strong"}})
        manifest = tmp_path / "in.jsonl"
        rows = [json.loads(line) for line in (SYNTH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
        rows = [{**r, "video": str(SYNTH / r["video"]), "audio": str(SYNTH / r["audio"])} for r in rows[:3]]
        manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        loaded, rejects, _ = load_rows(manifest, "cavsr")
        assert not rejects
        stages = [s for s in cavsr_stages(config.cavsr) if s.name != "ocr"]  # OCR is slow and not at issue

        def run() -> dict[str, int]:
            return run_stages(stages, loaded, tmp_path / "out", config, RoleFactory(config)).attempted

        first = run()
        judged = first["judge"]
        assert judged > 0 and len(server.requests) == judged
        assert set(run().values()) == {0}  # unchanged: everything comes from the store
        monkeypatch.setattr(chat_roles, "judge_prompt", lambda a, b: f"{a} / {b}: reply VERDICT: KEEP or DISCARD")
        third = run()
        assert third["judge"] == judged and len(server.requests) == 2 * judged
        assert {name: n for name, n in third.items() if name != "judge"} == dict.fromkeys(
            (s.name for s in stages if s.name != "judge"), 0)
    finally:
        server.close()
