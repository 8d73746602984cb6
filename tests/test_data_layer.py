"""One data layer, one media setting per task, one model loader.

- `avcot` (the library) never imports the wiring (`datamodules/`, `lit_modules/`); only the CLI entry may.
- Each task's media default is the same in its DataModule, its eval command and the demo tab.
- `avcot.model.checkpoint_kind` names every kind of model argument; `avcot.model.load_model` refuses a
  Lightning .ckpt (a pickle) and an adapter passed as the base, with what to pass instead.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from avcot.data.clips import CAVSR_MEDIA, MCQ_MEDIA

ROOT = Path(__file__).resolve().parents[1]
WIRING = ("datamodules", "lit_modules")
ENTRY_POINTS = {ROOT / "avcot" / "cli.py"}
"""The CLI entry wires LightningCLI to the DataModules and LightningModules: it may import them."""


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` / `from ... import` in `path` names (at any depth: lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def wiring_imports(path: Path) -> list[str]:
    return sorted(m for m in imported_modules(path) if m.split(".")[0] in WIRING)


def test_imported_modules_sees_lazy_and_from_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\n\ndef f():\n    from datamodules.cavsr import X\n    import lit_modules.sft\n")
    assert wiring_imports(probe) == ["datamodules.cavsr", "lit_modules.sft"]


def test_avcot_imports_no_datamodules_or_lit_modules():
    offenders = {str(p.relative_to(ROOT)): wiring_imports(p) for p in sorted((ROOT / "avcot").rglob("*.py"))
                 if p not in ENTRY_POINTS}
    assert {p: m for p, m in offenders.items() if m} == {}


def _default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


@pytest.mark.parametrize("field", ["num_frames", "frame_size", "max_seconds"])
def test_each_task_has_one_media_default_everywhere(field):
    from avcot.eval.__main__ import CAVSR_DEFAULTS, MCQ_DEFAULTS
    from avcot.eval.cavsr import CavsrEvalSettings
    from avcot.eval.mcq import McqEvalSettings
    from datamodules.cavsr import CavsrDataModule
    from datamodules.mcq import McqDataModule
    from demo.inference import DemoSettings

    cavsr = {"datamodule": _default(CavsrDataModule.__init__, field), "eval settings": _default(CavsrEvalSettings,
             field), "eval cli": CAVSR_DEFAULTS[field], "demo": getattr(DemoSettings().cavsr, field)}
    mcq = {"datamodule": _default(McqDataModule.__init__, field), "eval settings": _default(McqEvalSettings, field),
           "eval cli": MCQ_DEFAULTS[field], "demo": getattr(DemoSettings().mcq, field)}
    assert cavsr == dict.fromkeys(cavsr, getattr(CAVSR_MEDIA, field))
    assert mcq == dict.fromkeys(mcq, getattr(MCQ_MEDIA, field))


def test_demo_flags_override_both_tasks_and_keep_the_rest():
    from demo.inference import DemoSettings

    s = DemoSettings.from_flags(max_seconds=5.0, max_new_tokens=7)
    assert (s.cavsr.max_seconds, s.mcq.max_seconds, s.max_new_tokens) == (5.0, 5.0, 7)
    assert (s.cavsr.num_frames, s.mcq.num_frames) == (CAVSR_MEDIA.num_frames, MCQ_MEDIA.num_frames)


def test_checkpoint_kind_names_every_kind(tmp_path):
    from avcot.model import checkpoint_kind

    adapter, full, empty = tmp_path / "adapter", tmp_path / "full", tmp_path / "empty"
    for d in (adapter, full, empty):
        d.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (full / "config.json").write_text("{}")
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"not opened")
    assert [checkpoint_kind(str(p)) for p in ("tiny", adapter, full, ckpt, "Qwen/Qwen2.5-Omni-7B")] == \
        ["tiny", "adapter", "full", "lightning", "hub"]
    with pytest.raises(FileNotFoundError, match="neither adapter_config.json"):
        checkpoint_kind(str(empty))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        checkpoint_kind(str(tmp_path / "missing"))


def test_load_model_refuses_a_lightning_ckpt_and_an_adapter_as_base(tmp_path):
    from avcot.model import CheckpointError, UnsafeCheckpointError, load_model

    ckpt = tmp_path / "epoch=0.ckpt"
    ckpt.write_bytes(b"\x80\x04 a pickle that must never be opened")
    with pytest.raises(UnsafeCheckpointError, match="Lightning .ckpt is a pickle file.*adapter-last"):
        load_model(str(ckpt))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="LoRA adapter directory, not a model"):
        load_model(str(tmp_path))


def test_eval_and_demo_load_through_the_one_loader(tmp_path, monkeypatch):
    """Both callers reach avcot.model.load_model with the same (base, adapter) for an adapter checkpoint."""
    import avcot.model
    from avcot.eval.runner import ModelSpec, load_eval_model
    from demo.runtime import load_model as demo_load

    calls = []

    class Stub:
        def to(self, device):
            return self

        def eval(self):
            return self

    monkeypatch.setattr(avcot.model, "load_model", lambda base, adapter=None, **kw: calls.append((base, adapter))
                        or Stub())
    (tmp_path / "adapter_config.json").write_text("{}")
    load_eval_model(ModelSpec(ckpt=str(tmp_path), device="cpu"))
    demo_load("tiny", str(tmp_path))
    assert calls == [("tiny", str(tmp_path)), ("tiny", str(tmp_path))]


def test_example_cache_decodes_each_row_once_and_keeps_its_skip():
    from avcot.data.examples import Example, ExampleDataset, Skipped
    from avcot.data.rows import ManifestRow

    calls: list[str] = []

    def build(record: dict) -> Example:
        calls.append(record["id"])
        if record["id"] == "bad":
            raise ValueError("undecodable")
        return Example(record["id"], encoded=None, reference=record["id"])  # type: ignore[arg-type]

    rows = [ManifestRow(n + 1, {"id": i}, None) for n, i in enumerate(["a", "bad", "c"])]
    for cache, decodes in ((False, 6), (True, 3)):
        calls.clear()
        ds = ExampleDataset(rows, build, source="m.jsonl", cache=cache)
        first = [ds[i] for i in range(3)]
        second = [ds[i] for i in range(3)]
        assert len(calls) == decodes and calls[:3] == ["a", "bad", "c"]
        assert [type(x) for x in second] == [Example, Skipped, Example] and second[0] == first[0]
        assert "line 2" in second[1].reject.reason


def test_cache_examples_gives_the_same_batches_over_epochs(tmp_path):
    from helpers import write_traced_manifest

    from datamodules.cavsr import CavsrDataModule

    manifest = write_traced_manifest(tmp_path / "m.jsonl", 3)
    epochs = {}
    for cache in (False, True):
        dm = CavsrDataModule(train_manifest=str(manifest), batch_size=2, val_fraction=0.0, split_column=None,
                             rejects_path=str(tmp_path / "rejects.jsonl"), num_frames=2, frame_size=56,
                             cache_examples=cache)
        dm.setup("fit")
        loader = dm.train_dataloader()
        runs = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            runs.append([(b.ids, b.inputs["input_ids"].clone(), b.inputs["pixel_values_videos"].clone())
                         for b in loader])
        epochs[cache] = runs
    for (ids_a, tok_a, pix_a), (ids_b, tok_b, pix_b) in zip(sum(epochs[False], []), sum(epochs[True], [])):
        assert ids_a == ids_b and tok_a.equal(tok_b) and pix_a.equal(pix_b)
