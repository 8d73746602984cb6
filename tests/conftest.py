"""Shared fixtures: the embedded tiny processor and model are built once per session."""
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
