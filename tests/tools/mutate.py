"""Mutation testing of avcot's pure core: one small AST-located change at a time, each module's own tests.

Run from the repository root (pytest does not collect this file; see tests/tools/README.md):

    .venv/bin/python tests/tools/mutate.py --module grpo --jobs 1 --out /tmp/mutants.md

The packages and tests are copied into a temporary directory when the run starts and every mutant is
written over the module *in that copy* (one copy per job), with PYTHONPATH pointing at it, so the working
tree is never written to, even when the run is interrupted. A mutant is "killed" when the mapped tests
fail (or the mutated module no longer imports), "timeout" when they run past the limit (counted as
detected), "survived" when they pass. Mutants listed in the equivalent-mutant file (one per line,
``module | function | before => after | reason``) are not run and not counted in the score.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENT = Path(__file__).with_name("mutants_equivalent.txt")
# Each module's own tests only: a mutant is judged by the tests written for its module, and the fast
# files keep one mutant at a few seconds (the slow Lightning/TRL/fuzz files are left out on purpose).
TARGETS: dict[str, tuple[str, ...]] = {
    "grpo": ("tests/test_grpo.py", "tests/test_grpo_edges.py"),
    "rewards": ("tests/test_rewards.py", "tests/test_rewards_edges.py", "tests/test_parsers_adversarial.py"),
    "text": ("tests/test_text.py", "tests/test_text_edges.py", "tests/test_text_wenet.py"),
    "filters": ("tests/test_filters.py", "tests/test_filters_edges.py"),
    "traces": ("tests/test_traces.py", "tests/test_traces_edges.py", "tests/test_parsers_adversarial.py"),
    "phonetics": ("tests/test_phonetics.py", "tests/test_phonetics_edges.py"),
}
COPIED = ("avcot", "datamodules", "lit_modules", "demo", "bench", "tests", "pyproject.toml")
DATA_TABLE = 8
"""String elements of a set/list/tuple/dict literal longer than this are data (filler words, pinyin
initials), not logic: emptying one of them is not mutated."""

_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}


@dataclass(frozen=True)
class Mutant:
    """One change to one module: where it is, what it does, and the mutated source."""

    module: str
    qualname: str
    line: int
    operator: str
    before: str
    after: str
    source: str

    @property
    def key(self) -> str:
        """Line-number-free identity used by the equivalent-mutant file."""
        return f"{self.module} | {self.qualname} | {self.before} => {self.after}"


@dataclass
class Result:
    """Outcome of running one mutant's tests."""

    module: str
    key: str
    line: int
    operator: str
    status: str
    """killed, timeout, survived, equivalent or error."""
    seconds: float = 0.0
    killed_by: str = ""


def _short(text: str, limit: int = 90) -> str:
    """One line, collapsed whitespace, at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


class _Collector:
    """Walks a module's AST and proposes (node, replacement text, operator) edits."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.edits: list[tuple[ast.AST, str, str, str]] = []  # node, replacement, operator, qualname

    def add(self, node: ast.AST, replacement: str, operator: str, qual: list[str]) -> None:
        self.edits.append((node, replacement, operator, ".".join(qual) or "<module>"))

    def expr(self, node: ast.AST, qual: list[str], table: bool = False) -> None:
        """Mutations of one expression node, then of its children."""
        if isinstance(node, ast.JoinedStr):
            return  # f-strings are messages
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal":
            return  # type aliases
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in _COMPARE:
                    new = copy.copy(node)
                    new.ops = [*node.ops[:k], _COMPARE[type(op)](), *node.ops[k + 1:]]
                    self.add(node, f"({ast.unparse(new)})", "compare", qual)
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            self.add(node, f"({ast.unparse(ast.BinOp(node.left, _ARITH[type(node.op)](), node.right))})",
                     "arith", qual)
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.add(node, f"({ast.unparse(ast.BoolOp(other, node.values))})", "and/or", qual)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            self.add(node, f"({ast.unparse(node.operand)})", "not" if isinstance(node.op, ast.Not) else "sign",
                     qual)
        elif isinstance(node, ast.Constant):
            self.constant(node, qual, table)
        elif isinstance(node, ast.Call):
            self.minmax(node, qual)
        elif isinstance(node, ast.Slice):
            self.slice(node, qual)
        is_table = isinstance(node, (ast.Set, ast.List, ast.Tuple, ast.Dict)) and len(
            node.keys if isinstance(node, ast.Dict) else node.elts) > DATA_TABLE
        for child in ast.iter_child_nodes(node):
            self.expr(child, qual, table=is_table)

    def constant(self, node: ast.Constant, qual: list[str], table: bool) -> None:
        value = node.value
        if isinstance(value, bool):
            self.add(node, repr(not value), "const", qual)
        elif isinstance(value, (int, float)):
            for new in (value + 1, value - 1):
                self.add(node, f"({new!r})", "const", qual)
        elif isinstance(value, str) and value and not table:
            self.add(node, "''", "const", qual)

    def minmax(self, node: ast.Call, qual: list[str]) -> None:
        func = node.func
        swap = {"min": "max", "max": "min"}
        if isinstance(func, ast.Name) and func.id in swap:
            self.add(func, swap[func.id], "min/max", qual)
        elif isinstance(func, ast.Attribute) and func.attr in swap:
            self.add(func, ast.unparse(ast.Attribute(func.value, swap[func.attr], ast.Load())), "min/max", qual)

    def slice(self, node: ast.Slice, qual: list[str]) -> None:
        for bound in ("lower", "upper"):
            value = getattr(node, bound)
            if value is None:
                continue
            self.add(node, ast.unparse(ast.Slice(**{**vars(node), bound: None})), "slice", qual)
            if not isinstance(value, ast.Constant):  # constants already get +/-1
                shifted = ast.BinOp(value, ast.Add(), ast.Constant(1))
                self.add(node, ast.unparse(ast.Slice(**{**vars(node), bound: shifted})), "slice", qual)

    def body(self, stmts: list[ast.stmt], qual: list[str], deletable: bool) -> None:
        for stmt in stmts:
            if deletable and not isinstance(stmt, ast.Pass) and not _is_docstring(stmt):
                self.add(stmt, "pass", "delete", qual)
            self.stmt(stmt, qual)

    def stmt(self, node: ast.stmt, qual: list[str]) -> None:
        """Mutations inside one statement (annotations, decorators, imports, raise messages skipped)."""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
                self.expr(default, [*qual, node.name])
            self.body(node.body, [*qual, node.name], deletable=False)
        elif isinstance(node, ast.ClassDef):
            self.body(node.body, [*qual, node.name], deletable=False)
        elif isinstance(node, (ast.If, ast.For, ast.While)):
            self.expr(node.test if not isinstance(node, ast.For) else node.iter, qual)
            self.body(node.body, qual, deletable=True)
            self.body(node.orelse, qual, deletable=True)
        elif isinstance(node, (ast.With, ast.Try)):
            for item in getattr(node, "items", []):
                self.expr(item.context_expr, qual)
            self.body(node.body, qual, deletable=False)
            for handler in getattr(node, "handlers", []):
                self.body(handler.body, qual, deletable=False)
            self.body(getattr(node, "orelse", []), qual, deletable=False)
            self.body(getattr(node, "finalbody", []), qual, deletable=False)
        elif isinstance(node, ast.Return):
            if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
                self.add(node, "return None", "return", qual)
                self.expr(node.value, qual)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.expr(node.value, qual)
        elif isinstance(node, ast.AugAssign):
            if type(node.op) in _ARITH:
                self.add(node, ast.unparse(ast.AugAssign(node.target, _ARITH[type(node.op)](), node.value)),
                         "arith", qual)
            self.expr(node.value, qual)
        elif isinstance(node, (ast.Assign, ast.Expr)) and not _is_docstring(node):
            self.expr(node.value, qual)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _splice(source: str, node: ast.AST, text: str) -> str:
    """Replace the node's source range (ast offsets are UTF-8 byte columns) with `text`."""
    raw = source.encode()
    begin = _offset(raw, node.lineno, node.col_offset)
    end = _offset(raw, node.end_lineno, node.end_col_offset)
    return (raw[:begin] + text.encode() + raw[end:]).decode()


def _offset(source: bytes, line: int, col: int) -> int:
    """Byte offset of (1-based line, UTF-8 byte column)."""
    start = 0
    for _ in range(line - 1):
        start = source.index(b"\n", start) + 1
    return start + col


def _shown(source: str, node: ast.AST, replacement: str, parents: dict[ast.AST, ast.AST]) -> tuple[str, str]:
    """(before, after) for reports: a bare constant, name or slice is shown inside its parent expression."""
    context = node
    if isinstance(node, (ast.Constant, ast.Name, ast.Attribute, ast.Slice, ast.UnaryOp)):
        parent = parents.get(node)
        if isinstance(parent, (ast.expr, ast.keyword)):
            context = parent
    raw = source.encode()
    begin = _offset(raw, context.lineno, context.col_offset)
    end = _offset(raw, context.end_lineno, context.end_col_offset)
    at = _offset(raw, node.lineno, node.col_offset) - begin
    upto = _offset(raw, node.end_lineno, node.end_col_offset) - begin
    segment = raw[begin:end]
    after = segment[:at] + replacement.encode() + segment[upto:]
    return _short(segment.decode()), _short(after.decode())


def mutants(module: str, source: str) -> list[Mutant]:
    """Every applicable mutant of `source`, in source order; no-op and duplicate edits dropped."""
    tree = ast.parse(source)
    collector = _Collector(source)
    collector.body(tree.body, [], deletable=False)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    original = ast.dump(tree)
    seen: set[str] = {original}
    out: list[Mutant] = []
    counts: Counter[str] = Counter()
    for node, replacement, operator, qualname in collector.edits:
        mutated = _splice(source, node, replacement)
        try:
            dumped = ast.dump(ast.parse(mutated))
        except SyntaxError:
            continue  # the edit does not fit its context (e.g. a constant in a pattern); nothing to test
        if dumped in seen:
            continue
        seen.add(dumped)
        before, after = _shown(source, node, replacement, parents)
        ident = f"{qualname} | {before} => {after}"
        counts[ident] += 1
        if counts[ident] > 1:
            after += f" [{counts[ident]}]"  # same text twice in one function: number the repeats
        out.append(Mutant(module, qualname, node.lineno, operator, before, after, mutated))
    return out


def load_equivalent(path: Path) -> dict[str, str]:
    """key -> reason from ``module | function | before => after | reason`` lines ('#' starts a comment)."""
    entries: dict[str, str] = {}
    if not path.exists():
        return entries
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(" | ", 2)
        tail = parts[2].rsplit(" | ", 1) if len(parts) == 3 else []
        if len(tail) != 2 or " => " not in tail[0] or not tail[1].strip():
            raise SystemExit(f"{path}:{n}: expected 'module | function | before => after | reason', got {line!r}")
        entries[f"{parts[0]} | {parts[1]} | {tail[0]}"] = tail[1].strip()
    return entries


class Workspace:
    """A private copy of the packages and tests; one mutant at a time is written over a module in it."""

    def __init__(self, parent: Path, index: int) -> None:
        self.root = parent / f"ws{index}"
        self.root.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "tools")
        for name in COPIED:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, self.root / name, ignore=ignore)
            elif src.exists():
                shutil.copy2(src, self.root / name)
        self.env = {**os.environ, "PYTHONPATH": str(self.root), "PYTHONDONTWRITEBYTECODE": "1"}

    def module_path(self, module: str) -> Path:
        return self.root / "avcot" / f"{module}.py"


class Runner:
    """Runs pytest in workspaces; remembers live process groups so an interrupt can end them."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.live: set[int] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def pytest(self, ws: Workspace, tests: list[str], timeout: float) -> tuple[str, float, str]:
        """(status, seconds, first failing test) of one pytest run in `ws`."""
        shutil.rmtree(ws.root / ".hypothesis", ignore_errors=True)  # no replay of another mutant's examples
        cmd = [self.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               "--hypothesis-seed=0", *tests]
        start = time.monotonic()
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, cwd=ws.root, env=ws.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            with self.lock:
                self.live.add(proc.pid)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc.pid)
                proc.wait()
                rc = None
            except BaseException:  # Ctrl-C: the child is in its own session and would not see it
                _kill(proc.pid)
                proc.wait()
                raise
            finally:
                with self.lock:
                    self.live.discard(proc.pid)
            log.seek(0)
            text = log.read().decode(errors="replace")
        seconds = time.monotonic() - start
        if self.stopping:
            return "error", seconds, "interrupted"
        if rc is None:
            return "timeout", seconds, ""
        if rc == 0:
            return "survived", seconds, ""
        failed = re.search(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)
        if rc in (1, 2):  # 2: interrupted by a collection error, e.g. the mutant does not import
            return "killed", seconds, failed.group(1) if failed else "collection/import error"
        return "error", seconds, _short(text[-300:], 300)

    def stop(self) -> None:
        self.stopping = True
        with self.lock:
            for pid in list(self.live):
                _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class BaselineError(Exception):
    """The unmutated tests do not pass in the copy: that module's mutants would mean nothing."""


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: running tests are stopped and partial results reported."""
    raise KeyboardInterrupt


def _check_baseline(runner: Runner, ws: Workspace, module: str, tests: list[str]) -> float:
    """Seconds of the unmutated tests in the copy; exits when they fail or import the working tree."""
    where = subprocess.run([runner.python, "-c", f"import avcot.{module} as m; print(m.__file__)"],
                           cwd=ws.root, env=ws.env, capture_output=True, text=True, check=False)
    if not where.stdout.strip().startswith(str(ws.root)):
        raise BaselineError(f"avcot.{module} imports from {where.stdout.strip() or where.stderr[-300:]!r}, "
                         f"not from the copy {ws.root}")
    status, seconds, detail = runner.pytest(ws, tests, timeout=600)
    if status != "survived":
        raise BaselineError(f"{module}: the unmutated tests do not pass in the copy ({status} {detail}); "
                         f"fix them first: {' '.join(tests)}")
    return seconds


def _pick(items: list[Mutant], limit: int | None) -> list[Mutant]:
    """At most `limit` mutants spread evenly over the module (all when limit is None)."""
    if limit is None or limit >= len(items):
        return items
    return [items[(k * len(items)) // limit] for k in range(limit)]


def run_module(runner: Runner, spaces: list[Workspace], module: str, args: argparse.Namespace,
               equivalent: dict[str, str], used: set[str], results: list[Result]) -> None:
    """Baseline, then every selected mutant of one module, `len(spaces)` at a time, appended to `results`."""
    tests = [t for t in (args.tests or TARGETS[module]) if (spaces[0].root / t).exists()]
    path = spaces[0].module_path(module)
    original = path.read_text(encoding="utf-8")
    todo = _pick(mutants(module, original), args.max)
    if args.recheck is not None:  # only what a previous run did not kill: new tests, or a longer limit
        todo = [m for m in todo if m.key in args.recheck]
    baseline = _check_baseline(runner, spaces[0], module, tests)
    timeout = args.timeout or max(20.0, 3.0 * baseline + 10.0)
    print(f"{module}: {len(todo)} mutants, tests {' '.join(tests)} (baseline {baseline:.1f} s, "
          f"timeout {timeout:.0f} s)", flush=True)
    free = list(spaces)
    lock = threading.Lock()
    done: list[str] = []

    def one(m: Mutant) -> Result:
        if m.key in equivalent:
            used.add(m.key)
            return Result(module, m.key, m.line, m.operator, "equivalent", killed_by=equivalent[m.key])
        if runner.stopping:
            return Result(module, m.key, m.line, m.operator, "error", killed_by="interrupted")
        with lock:
            ws = free.pop()
        target = ws.module_path(module)
        try:
            target.write_text(m.source, encoding="utf-8")
            status, seconds, detail = runner.pytest(ws, tests, timeout)
        finally:
            target.write_text(original, encoding="utf-8")
            with lock:
                free.append(ws)
        result = Result(module, m.key, m.line, m.operator, status, round(seconds, 2), detail)
        with lock:
            done.append(status)
            if status in ("survived", "error", "timeout"):
                print(f"  {status:8s} line {m.line:4d} [{m.operator}] {m.qualname}: {m.before} => {m.after}",
                      flush=True)
            if len(done) % 25 == 0:
                print(f"  ... {len(done)}/{len(todo)} run, {done.count('survived')} survived", flush=True)
        return result

    pool = ThreadPoolExecutor(max_workers=len(spaces))
    try:
        for future in [pool.submit(one, m) for m in todo]:
            results.append(future.result())
    except KeyboardInterrupt:
        runner.stop()  # end the running pytest process groups; queued mutants are cancelled below
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summary(results: list[Result]) -> dict[str, dict[str, float]]:
    """Per module counts and score = (killed + timeout) / (mutants - equivalent - errors)."""
    table: dict[str, dict[str, float]] = {}
    for module in dict.fromkeys(r.module for r in results):
        n = Counter(r.status for r in results if r.module == module)
        judged = n["killed"] + n["timeout"] + n["survived"]
        table[module] = {"mutants": sum(n.values()), "equivalent": n["equivalent"], "killed": n["killed"],
                         "timeout": n["timeout"], "survived": n["survived"], "error": n["error"],
                         "score": round((n["killed"] + n["timeout"]) / judged, 4) if judged else 1.0}
    return table


def markdown(results: list[Result], table: dict[str, dict[str, float]]) -> str:
    lines = ["| module | mutants | equivalent | killed | timeout | survived | error | score |",
             "|---|---|---|---|---|---|---|---|"]
    for module, row in table.items():
        lines.append(f"| {module} | {row['mutants']} | {row['equivalent']} | {row['killed']} | {row['timeout']} | "
                     f"{row['survived']} | {row['error']} | {row['score']:.1%} |")
    survivors = [r for r in results if r.status in ("survived", "error")]
    if survivors:
        lines += ["", "Surviving mutants (module:line [operator] function | before => after):", ""]
        lines += [f"- {r.status} {r.module}.py:{r.line} [{r.operator}] `{r.key.split(' | ', 1)[1]}`"
                  for r in survivors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS),
                        help="module(s) of avcot/ to mutate (repeatable; default: all six)")
    parser.add_argument("--max", type=int, default=None, help="at most N mutants per module, spread evenly")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested in parallel (one copy each)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 3 x the unmutated run + 10, at least 20)")
    parser.add_argument("--tests", nargs="+", default=None, help="test files instead of the module's own")
    parser.add_argument("--equivalent", type=Path, default=EQUIVALENT, help="equivalent-mutant list")
    parser.add_argument("--out", type=Path, default=None, help="write results: .json, or markdown otherwise")
    parser.add_argument("--list", action="store_true", help="only list the mutants, run nothing")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest")
    parser.add_argument("--recheck", type=Path, default=None,
                        help="only the mutants a previous --out .json recorded as timeout or survived")
    args = parser.parse_args(argv)
    if args.recheck is not None:
        previous = json.loads(args.recheck.read_text(encoding="utf-8"))["mutants"]
        args.recheck = {r["key"] for r in previous if r["status"] in ("timeout", "survived")}
    modules = args.module or list(TARGETS)
    equivalent = load_equivalent(args.equivalent)
    if args.list:
        for module in modules:
            source = (ROOT / "avcot" / f"{module}.py").read_text(encoding="utf-8")
            for m in _pick(mutants(module, source), args.max):
                mark = "  (equivalent)" if m.key in equivalent else ""
                print(f"{module}.py:{m.line} [{m.operator}] {m.key}{mark}")
        return 0
    runner = Runner(args.python)
    results: list[Result] = []
    used: set[str] = set()
    skipped: dict[str, str] = {}
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="avcot-mutate-") as tmp:
        spaces = [Workspace(Path(tmp), k) for k in range(max(1, args.jobs))]  # copies taken now
        try:
            for module in modules:
                try:
                    run_module(runner, spaces, module, args, equivalent, used, results)
                except BaselineError as err:  # report it and go on with the other modules
                    print(f"{module}: skipped: {err}", file=sys.stderr, flush=True)
                    skipped[module] = str(err)
        except KeyboardInterrupt:
            print("interrupted: partial results below (the working tree was never modified)", file=sys.stderr)
    table = summary(results)
    report = markdown(results, table) + "".join(f"\n{m}: not run: {why}\n" for m, why in skipped.items())
    print(report)
    stale = [k for k in equivalent if k.split(" | ", 1)[0] in modules and k not in used]
    if stale and args.max is None and args.recheck is None:  # a partial run leaves entries unmatched
        print("equivalent-list entries matching no mutant (stale, remove or update):", *stale, sep="\n  ")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".json":
            args.out.write_text(json.dumps({"summary": table, "skipped": skipped,
                                            "mutants": [asdict(r) for r in results]},
                                           indent=1, ensure_ascii=False), encoding="utf-8")
        else:
            args.out.write_text(report, encoding="utf-8")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
