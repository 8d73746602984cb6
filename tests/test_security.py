"""Safe loading: weights_only torch.load everywhere, no remote code by default, safetensors adapters."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("avcot", "datamodules", "lit_modules", "demo", "bench", "tests")


def _python_files():
    for pkg in PACKAGES:
        yield from (ROOT / pkg).rglob("*.py")


def _calls(tree: ast.AST, dotted: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            yield node


def test_every_torch_load_is_weights_only():
    offenders = []
    for path in _python_files():
        for call in _calls(ast.parse(path.read_text(encoding="utf-8")), "torch.load"):
            kw = {k.arg: k.value for k in call.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_no_remote_code_is_enabled_in_project_code():
    offenders = []
    for path in _python_files():
        if path.name == Path(__file__).name:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                if isinstance(node.value, ast.Constant) and node.value.value is True:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno}")
    assert not offenders, f"trust_remote_code=True hard-coded at {offenders}"


@pytest.mark.parametrize("func", ["avcot.model:load_thinker", "avcot.model:_from_pretrained"])
def test_remote_code_is_opt_in(func):
    import importlib

    mod, name = func.split(":")
    params = inspect.signature(getattr(importlib.import_module(mod), name)).parameters
    if "trust_remote_code" in params and params["trust_remote_code"].default is not inspect.Parameter.empty:
        assert params["trust_remote_code"].default is False


def test_adapters_are_written_as_safetensors_only(tmp_path):
    from avcot.model import apply_lora, load_adapter, load_thinker

    model = apply_lora(load_thinker("tiny"))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    # A pickle-format adapter is refused before PEFT would unpickle it.
    (tmp_path / "adapter_model.safetensors").rename(tmp_path / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        load_adapter(load_thinker("tiny"), str(tmp_path))
