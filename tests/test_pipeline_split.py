"""The split step: seeded, disjoint, fractions kept, source clips never straddle, reruns byte-identical."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from avcot.pipeline.__main__ import main as pipeline_main
from avcot.pipeline.split import assign_splits, group_key, split_manifest

SYNTH = Path(__file__).parent / "data" / "synth"


def _grouped(n_groups: int, seed: int) -> tuple[list[str], list[str]]:
    """Ids and group keys: groups of 1-4 rows, shuffled so a group's rows are not adjacent."""
    rng = random.Random(seed)
    pairs = [(f"g{g}-r{k}", f"g{g}") for g in range(n_groups) for k in range(rng.randint(1, 4))]
    rng.shuffle(pairs)
    return [i for i, _ in pairs], [g for _, g in pairs]


def test_assign_splits_is_deterministic_per_seed_and_moves_with_it():
    ids, groups = _grouped(200, 0)
    fr = {"val": 0.1, "test": 0.1}
    first = assign_splits(ids, groups, fr, seed=3)
    assert assign_splits(ids, groups, fr, seed=3) == first
    assert assign_splits(list(reversed(ids)), list(reversed(groups)), fr, seed=3) == first  # order-free
    assert assign_splits(ids, groups, fr, seed=4) != first


def test_every_id_in_exactly_one_split_and_groups_never_straddle():
    ids, groups = _grouped(150, 1)
    where = assign_splits(ids, groups, {"val": 0.2, "test": 0.1}, seed=0)
    assert sorted(where) == sorted(ids) and set(where.values()) == {"train", "val", "test"}
    split_of_group: dict[str, set[str]] = {}
    for i, g in zip(ids, groups):
        split_of_group.setdefault(g, set()).add(where[i])
    assert all(len(s) == 1 for s in split_of_group.values())


@pytest.mark.parametrize("val,test", [(0.05, 0.05), (0.1, 0.2), (0.0, 0.3)])
def test_fractions_close(val, test):
    ids, groups = _grouped(400, 2)
    counts = Counter(assign_splits(ids, groups, {"val": val, "test": test}, seed=0).values())
    n = len(ids)
    # within half the largest group (4 rows) of the target, per split
    assert abs(counts["val"] - val * n) <= 2.5 and abs(counts["test"] - test * n) <= 2.5
    singles = [f"r{k}" for k in range(1000)]
    exact = Counter(assign_splits(singles, singles, {"val": val, "test": test}, seed=0).values())
    assert exact["val"] == round(val * 1000) and exact["test"] == round(test * 1000)


def test_small_sets_still_get_one_group_per_positive_fraction_and_train_keeps_one():
    ids = ["a", "b", "c", "d"]
    counts = Counter(assign_splits(ids, ids, {"val": 0.05, "test": 0.05}, seed=0).values())
    assert counts == {"train": 2, "val": 1, "test": 1}
    assert set(assign_splits(["a"], ["a"], {"val": 0.5, "test": 0.4}, seed=0).values()) == {"train"}


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unique"):
        assign_splits(["a", "a"], ["g", "h"], {"val": 0.1}, seed=0)
    with pytest.raises(ValueError, match="nothing for train"):
        assign_splits(["a"], ["a"], {"val": 0.5, "test": 0.5}, seed=0)
    with pytest.raises(ValueError, match="--val"):
        assign_splits(["a"], ["a"], {"val": -0.1}, seed=0)


def test_group_key_keeps_source_clips_together():
    # the pieces ingest cuts from one recording
    assert group_key({"id": "talk_000", "video": "segments/talk_000.mp4"}) == \
        group_key({"id": "talk_007", "video": "segments/talk_007.mp4"})
    assert group_key({"video": "segments/talk_000.mp4"}) != group_key({"video": "segments/walk_000.mp4"})
    # outside segments/ a _NNN stem is a clip's own name
    assert group_key({"video": "clips/take_001.mp4"}) != group_key({"video": "clips/take_002.mp4"})
    # AVRT: the -v (video) and -a (audio track) questions of one clip
    assert group_key({"video": "clips/x.mp4", "audio": None}) == group_key({"video": None, "audio": "clips/x.wav"})
    assert group_key({"video": "a/x.mp4"}) != group_key({"video": "b/x.mp4"})
    # an explicit column wins; a row without media falls back to its id
    assert group_key({"video": "a.mp4", "spk": "s1"}, "spk") == group_key({"video": "b.mp4", "spk": "s1"}, "spk")
    assert group_key({"id": "q1"}) != group_key({"id": "q2"})


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_split_manifest_files_rejects_media_and_rerun(tmp_path):
    rows = [json.loads(x) for x in (SYNTH / "mcq.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    bad = ['{"question": "no id"}', "not json", json.dumps(rows[0], ensure_ascii=False)]
    src = tmp_path / "in"
    src.mkdir()
    (src / "clips").symlink_to((SYNTH / "clips").resolve())
    manifest = _write_jsonl(src / "rl.jsonl", lines[:5] + bad + lines[5:])
    out = tmp_path / "split"
    report = split_manifest(manifest, out, val=0.2, test=0.2, seed=0)
    assert report.rows_in == len(rows) + len(bad)
    assert sum(report.counts.values()) == len(rows) and all(report.counts[s] for s in ("train", "val", "test"))
    rejects = [json.loads(x) for x in (out / "split_rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rejects] == [6, 7, 8]
    assert "field 'id'" in rejects[0]["reason"] and "rl.jsonl:6" in rejects[0]["reason"]
    assert "not valid JSON" in rejects[1]["reason"] and "duplicate id" in rejects[2]["reason"]
    seen: dict[str, str] = {}
    for name in ("train", "val", "test"):
        got = [json.loads(x) for x in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert pl.read_parquet(out / f"{name}.parquet")["id"].to_list() == [r["id"] for r in got]
        for r in got:
            assert r["id"] not in seen
            seen[r["id"]] = name
            media = r["video"] or r["audio"]
            assert (out / media).is_file()  # relative to the split's own folder now
    clip_split: dict[str, set[str]] = {}
    for rid, name in seen.items():
        clip_split.setdefault(rid.rsplit("-", 1)[0], set()).add(name)
    assert all(len(s) == 1 for s in clip_split.values())  # -v, -a, -av of one clip together
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    split_manifest(manifest, out, val=0.2, test=0.2, seed=0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_split_defaults_to_the_manifests_folder(tmp_path, capsys):
    manifest = tmp_path / "sft.jsonl"
    manifest.write_bytes((SYNTH / "sft_avcot.jsonl").read_bytes())
    assert pipeline_main(["split", "--manifest", str(manifest), "--val", "0.25", "--test", "0.25"]) == 0
    assert "[split] rows_in=12 " in capsys.readouterr().out
    assert sum(len((tmp_path / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "val", "test")) == 12
    _write_jsonl(manifest, ['{"text": "no id"}'])
    assert pipeline_main(["split", "--manifest", str(manifest)]) == 1
    with pytest.raises(SystemExit, match="nothing for train"):
        pipeline_main(["split", "--manifest", str(manifest), "--val", "0.5", "--test", "0.5"])
