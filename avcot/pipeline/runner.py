"""Run row-wise stages over rows: resume from shards, bounded concurrency, local or Ray execution.

A stage is a pure function ``fn(row, backend, settings) -> Kept | Dropped`` (raising means the
row is rejected). The runner hashes every input row, skips rows whose outcome is already stored,
processes the rest in shard-sized chunks (local: asyncio + worker threads under a semaphore;
Ray: a Ray Data ``map`` whose results the driver writes as shards), and returns the outcomes of
all input rows in input order. Rows never disappear: each ends kept, filtered, rejected or, for
this run only, failed.

Rejected is permanent and stored: the stage (or the server, with a 4xx) refused this row, and
asking again would give the same answer. Failed is transient and never stored: a
``TransientError`` (server down, timeout, 429 or 5xx after the client's retries), a built-in
``TimeoutError``/``ConnectionError``, or a backend that could not be built. Such a row stops at
that stage and the next run retries it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from avcot.pipeline.backends import TransientError
from avcot.pipeline.config import PipelineConfig, RoleFactory
from avcot.pipeline.store import STORED, Outcome, StageStore, canonical_json, row_key


@dataclass(frozen=True)
class Kept:
    """The stage accepted the row; `row` is the updated row."""

    row: Any


@dataclass(frozen=True)
class Dropped:
    """The stage filtered the row out on purpose (a data filter, not a failure)."""

    reason: str


@dataclass(frozen=True)
class Stage:
    """One named row-wise step: fn(row, backend-or-None, settings)."""

    name: str
    fn: Callable[[Any, Any, Any], Kept | Dropped]
    role: str | None
    """Role whose backend fn receives (None: fn gets None)."""
    settings: Any
    """Frozen dataclass of the stage's settings; enters the resume hash."""
    row_type: type
    """Dataclass of the rows (rebuilt from payload JSON with row_type.from_dict)."""
    uses: tuple[str, ...] | None = None
    """Settings fields the stage reads (only these enter the hash); None hashes all of them."""


@dataclass(frozen=True)
class WorkItem:
    """One pending row of a stage, in a form that pickles cheaply (for Ray)."""

    key: str
    row_id: str
    order: int
    source: str
    payload: str


def row_payload(row: Any) -> str:
    """Canonical JSON of a row dataclass."""
    return canonical_json(dataclasses.asdict(row))


def error_source(row: Any, exc: BaseException) -> str:
    """The file to blame: the media file a media error names, else the input file."""
    path = getattr(exc, "path", None) if type(exc).__name__ == "MediaError" else None
    return str(path) if path else getattr(row, "source", "")


def transient_failure(exc: BaseException) -> str | None:
    """'<kind> at <endpoint>' when `exc` (or the exception it was raised from) is transient, else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, TransientError):
            return f"{cur.kind} at {cur.endpoint}" if cur.endpoint else cur.kind
        if isinstance(cur, TimeoutError):
            return "timeout"
        if isinstance(cur, ConnectionError):
            return "connection error"
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


def apply_stage(stage: Stage, factory: RoleFactory, item: WorkItem) -> Outcome:
    """Run the stage on one row: an exception is a 'rejected' outcome, or 'failed' when transient."""
    row = stage.row_type.from_dict(json.loads(item.payload))
    base = dict(key=item.key, row_id=item.row_id, order=item.order, source=item.source)
    try:
        backend = factory.get(stage.role) if stage.role else None
    except Exception as exc:  # noqa: BLE001 - a missing key or model is not this row's fault: retry next run
        return Outcome(**base, status="failed", reason=_describe(exc), payload=item.payload,
                       failure=f"backend {stage.role} not built ({_describe(exc)[:200]})")
    try:
        result = stage.fn(row, backend, stage.settings)
    except Exception as exc:  # noqa: BLE001 - batch jobs record failures and carry on
        kind = transient_failure(exc)
        if kind is not None:
            return Outcome(**base, status="failed", reason=_describe(exc), payload=item.payload, failure=kind)
        return Outcome(**{**base, "source": error_source(row, exc) or item.source},
                       status="rejected", reason=_describe(exc), payload=item.payload)
    if isinstance(result, Kept):
        return Outcome(**base, status="kept", reason="", payload=row_payload(result.row))
    if isinstance(result, Dropped):
        return Outcome(**base, status="filtered", reason=result.reason, payload=item.payload)
    raise TypeError(f"stage {stage.name} returned {type(result).__name__}, expected Kept or Dropped")


def work_items(stage: Stage, rows: Sequence[Any], identity: str) -> list[WorkItem]:
    """Hash each row for this stage (payload + stage config + backend identity)."""
    settings = dataclasses.asdict(stage.settings) if stage.settings is not None else {}
    if stage.uses is not None:
        settings = {k: v for k, v in settings.items() if k in stage.uses}
    items = []
    for row in rows:
        payload = row_payload(row)
        items.append(WorkItem(row_key(payload, stage.name, settings, identity), row.id, row.order,
                              row.source, payload))
    return items


def chunks(items: Sequence[WorkItem], size: int) -> Iterator[Sequence[WorkItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _run_chunk(stage: Stage, factory: RoleFactory, chunk: Sequence[WorkItem],
                     concurrency: int) -> list[Outcome]:
    """At most `concurrency` rows of the chunk at once, each in a worker thread."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(item: WorkItem) -> Outcome:
        async with gate:
            return await asyncio.to_thread(apply_stage, stage, factory, item)

    return list(await asyncio.gather(*(one(i) for i in chunk)))


def _local(stage: Stage, factory: RoleFactory, pending: Sequence[WorkItem],
           config: PipelineConfig) -> Iterable[list[Outcome]]:
    for chunk in chunks(pending, config.shard_size):
        yield asyncio.run(_run_chunk(stage, factory, chunk, config.concurrency))


class _RayApply:
    """Ray Data callable class: builds backends once per actor, applies the stage to rows."""

    def __init__(self, stage: Stage, factory: RoleFactory) -> None:
        self.stage, self.factory = stage, factory

    def __call__(self, rec: dict[str, Any]) -> dict[str, Any]:
        item = WorkItem(**json.loads(rec["item"]))
        return {"outcome": json.dumps(dataclasses.asdict(apply_stage(self.stage, self.factory, item)))}


def import_ray() -> Any:
    """Import Ray, or explain how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError("--executor ray needs Ray Data: pip install 'avcot[ray]' (ray[data])") from exc
    return ray


def _ray(stage: Stage, factory: RoleFactory, pending: Sequence[WorkItem],
         config: PipelineConfig) -> Iterable[list[Outcome]]:
    """Rows run on Ray Data actors; the driver groups results into shards as they arrive."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(num_cpus=max(1, config.concurrency), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_python_path())}})
    ds = ray.data.from_items([{"item": json.dumps(dataclasses.asdict(i))} for i in pending])
    ds = ds.map(_RayApply, fn_constructor_args=(stage, factory), concurrency=max(1, config.concurrency))
    buffer: list[Outcome] = []
    for rec in ds.iter_rows():
        buffer.append(Outcome(**json.loads(rec["outcome"])))
        if len(buffer) >= config.shard_size:
            yield buffer
            buffer = []
    if buffer:
        yield buffer


def _python_path() -> list[str]:
    """The avcot source root first, so Ray workers import the same package as the driver."""
    import avcot

    root = os.path.dirname(os.path.dirname(os.path.abspath(avcot.__file__)))
    extra = os.environ.get("PYTHONPATH", "")
    return [root, *([extra] if extra else [])]


@dataclass(frozen=True)
class StageRun:
    """One stage over its input rows."""

    outcomes: list[Outcome]
    """Every input row's outcome (stored ones reused, failed ones from this run), in input order."""
    attempted: int
    """Rows this run computed (the rest came from the store)."""


@dataclass(frozen=True)
class PipelineRun:
    """The chained stages of one run."""

    per_stage: dict[str, list[Outcome]]
    final: list[Any]
    """Rows every stage kept."""
    attempted: dict[str, int]
    """Rows computed this run, per stage."""


def run_stage(stage: Stage, rows: Sequence[Any], out_dir: str | os.PathLike[str], config: PipelineConfig,
              factory: RoleFactory) -> StageRun:
    """Outcomes of every row for this stage; only permanent ones are stored (failed rows stay pending)."""
    store = StageStore(out_dir, stage.name)
    identity = config.role_identity(stage.role) if stage.role else "none"
    items = work_items(stage, rows, identity)
    done = store.load()
    pending = [i for i in items if i.key not in done]
    failed: dict[str, Outcome] = {}
    bar = tqdm(total=len(items), initial=len(items) - len(pending), desc=stage.name, unit="row",
               disable=not config.progress, leave=True)
    run = _ray if config.executor == "ray" else _local
    try:
        for outcomes in run(stage, factory, pending, config):
            store.write_shard([o for o in outcomes if o.status in STORED])
            done.update((o.key, o) for o in outcomes if o.status in STORED)
            failed.update((o.key, o) for o in outcomes if o.status not in STORED)
            bar.update(len(outcomes))
    finally:
        bar.close()
    outcomes = sorted((done.get(i.key) or failed[i.key] for i in items), key=lambda o: o.order)
    return StageRun(outcomes, len(pending))


def run_stages(stages: Sequence[Stage], rows: Sequence[Any], out_dir: str | os.PathLike[str],
               config: PipelineConfig, factory: RoleFactory) -> PipelineRun:
    """Chain stages: each gets the rows the previous one kept (failed rows stop where they failed)."""
    per_stage: dict[str, list[Outcome]] = {}
    attempted: dict[str, int] = {}
    current = list(rows)
    for stage in stages:
        result = run_stage(stage, current, out_dir, config, factory)
        per_stage[stage.name], attempted[stage.name] = result.outcomes, result.attempted
        current = [stage.row_type.from_dict(json.loads(o.payload)) for o in result.outcomes if o.status == "kept"]
    return PipelineRun(per_stage, current, attempted)
