"""Shared fixtures (the embedded tiny processor is built once per session) and where the shared helpers live.

Helpers that several test modules use are plain functions and classes in helper modules beside this file, not
fixtures: they take arguments (row counts, paths, seeds) and are also imported by the scripts that the
multi-process tests launch, which see no fixtures. pytest puts tests/ on sys.path (rootdir-relative "prepend"
import mode, no __init__.py), so a test imports them as `from helpers import ...`. Test modules never import
from each other.

- `helpers`: fixture paths (SYNTH, BAD), synth rows and traced manifests, JSON-lines I/O, tiny model batches.
- `training_probes`: BatchIds (records every training batch's ids) and StopAtStep (interrupts a fit).
- `multiproc`: run a launcher + ranks command so that a hang fails fast; `openai_stub`: a loopback
  OpenAI-compatible server; `sft_adapter`: a non-zero SFT LoRA adapter for the GRPO tests.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_processor():
    from avcot.processor import load_processor

    return load_processor("tiny")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
