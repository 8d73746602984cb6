"""avcot.atomic.atomic_dir: a directory appears whole under its final name or not at all."""
from __future__ import annotations

import pytest

from avcot.atomic import atomic_dir


def test_a_finished_directory_replaces_the_old_one_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "out" / "adapter-last"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
        assert not target.exists()  # nothing under the final name while writing
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced, not merged
    assert oct(target.stat().st_mode & 0o777) == oct(0o755)
    assert [p.name for p in target.parent.iterdir()] == ["adapter-last"]


def test_a_failed_write_keeps_the_old_directory_and_removes_the_temporary(tmp_path):
    target = tmp_path / "model-last"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("good")
    with pytest.raises(RuntimeError, match="disk full"), atomic_dir(target, tag="export") as tmp:
        assert tmp.name.startswith(".model-last.export-")
        (tmp / "weights").write_text("half")
        raise RuntimeError("disk full")
    assert (target / "weights").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model-last"]
