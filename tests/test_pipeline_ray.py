"""`--executor ray`: the row-wise stages on a local Ray Data cluster give the same export as local threads.

Needs the optional extra (`pip install 'avcot[ray]'`); skipped without it, and slow (Ray start-up).
"""
from __future__ import annotations

import pytest

from avcot.pipeline.runner import import_ray


def test_missing_ray_is_a_clear_import_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'avcot\[ray\]'"):
        import_ray()


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import dataclasses

    from avcot.pipeline import run_cavsr
    from avcot.pipeline.config import config_from_dict
    from helpers import FAST_PIPELINE, synth_rows, write_jsonl

    manifest = write_jsonl(tmp_path / "in.jsonl", synth_rows()[:4])
    local = config_from_dict(FAST_PIPELINE)
    c_local = run_cavsr(manifest, tmp_path / "local", local)
    try:
        c_ray = run_cavsr(manifest, tmp_path / "ray", dataclasses.replace(local, executor="ray", shard_size=2))
    finally:
        ray.shutdown()
    assert c_ray == c_local and c_ray.kept == 4
    assert (tmp_path / "ray" / "sft.jsonl").read_bytes() == (tmp_path / "local" / "sft.jsonl").read_bytes()
    ocr_shards = list((tmp_path / "ray" / "stages" / "ocr").glob("shard-*.parquet"))
    assert len(ocr_shards) == 2  # 4 rows written by the driver in shards of 2
