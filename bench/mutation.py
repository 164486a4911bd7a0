"""Mutation check of the approval checks: each check in `runbook/decisions.py`
and `activities/gatekeeper.py` (and `holds_role` in `runbook/identity.py`, which
`has_role` is) is taken out alone, and the tests that hold the
checks run against the module so changed. A mutant is "killed" when some test
fails; every mutant must be.

    python -m bench.mutation            # every mutant; the slow tests only for survivors
    python -m bench.mutation --list     # the mutants, without running anything
    python -m bench.mutation --only run --only plan   # mutants whose name has these words

How a check is taken out: the module's source is parsed and one node changed
in its syntax tree, then the tests run in a fresh process whose import system
loads that module from the changed tree (a finder ahead of the ordinary ones),
so every importer, the workflows' pass-through imports and the activities
included, sees the mutant. The mutants, found in the source as it is today:

- a refusing `if` (its body appends a problem, returns a refusal, raises,
  skips with `continue` or tightens a count) gets `if False:`;
- each operand of an `and` that grants something (an `if` whose body accepts,
  a `return`, a conditional expression) becomes `True`;
- the signature check: `signer_key` returns the key written in the signature,
  unverified;
- a broad `except Exception` net is taken away (the body runs bare).

A few mutants cannot change behaviour (`EQUIVALENT`, each with the reason);
they are run like the others and reported "equivalent" if no test fails.

Tests run in two stages, each in one pytest process per mutant with `-x`: the
fast tests (unit and security tests that are not integration tests, of the
files that use the two modules), then, only for a mutant they did not kill,
the slow ones (the time-skipping workflow tests, the security and signed
approval integration tests on a dev server). The unchanged modules are run
through both stages first: every test must pass there."""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "runbook.decisions": ROOT / "runbook" / "decisions.py",
    "activities.gatekeeper": ROOT / "activities" / "gatekeeper.py",
    "runbook.identity": ROOT / "runbook" / "identity.py",
    "runbook.attestation": ROOT / "runbook" / "attestation.py",
}
# Where only some functions of a module are checks of a decision: `has_role` in
# decisions.py is `holds_role`'s (ids and role names apart).
ONLY_FUNCTIONS = {
    "runbook.identity": {"holds_role"},
    "runbook.attestation": {"attestation_problem", "slack_count_problem", "check_attestors"},
}
# Functions that compute rather than check (digests, ids, the HMAC, reading the
# key from the environment) are left alone.
SKIPPED_FUNCTIONS = {
    "canonical",
    "plan_digest",
    "text",
    "guard_id_for",
    "rollback_id_for",
    "seal",
    "seal_key_from_env",
    "enforcing",
    "__init__",
}
NAMES = [  # a readable name for a mutant, from the source it changes
    ("signer_key", "signature"),
    ("identity is None", "identity"),
    ("not in identity.keys", "key"),
    ("payload.decision != decision", "decision"),
    ("payload.workflow_id != expected.workflow_id", "workflow"),
    ("payload.run_id != expected.run_id", "run"),
    ("payload.gate != expected.gate", "gate"),
    ("payload.plan != expected.plan", "plan"),
    ("MAX_VALIDITY", "validity length"),
    ("payload.issued_at > now", "future issue"),
    ("payload.expires_at <= now", "expiry"),
    ("nonce in seen_nonces", "nonce"),
    ("payload.text() != signed.payload", "canonical form"),
    ("if problems", "any problem"),
    ("now.tzinfo is None", "judged at a time with a time zone"),
    ("value.tzinfo is None", "decision times with a time zone"),
]
# Mutants that cannot change what the module does, and why; run like the others, and
# reported "equivalent" instead of "SURVIVED" when no test fails.
EQUIVALENT = {
    ("_aware_time", "at.tzinfo is not None"): "utcoffset() is None whenever tzinfo is",
    ("_aware_time", "at.utcoffset() is not None"): (
        "fromisoformat never gives a tzinfo whose utcoffset() is None"
    ),
    ("require", "entry is not None"): "a grant without a catalog entry is refused above",
}
UNVERIFIED = "_mutation_unverified_key"
UNVERIFIED_SOURCE = f'''
def {UNVERIFIED}(payload, armored):
    """The signature check taken out: the key the signature names, never verified."""
    import base64 as _b64
    import struct as _struct

    from sshsig.sshsig import SshsigSignature as _Sig

    blob = _Sig.from_armored(armored).public_key
    (size,) = _struct.unpack(">I", blob[:4])
    return f"{{blob[4 : 4 + size].decode()}} {{_b64.b64encode(blob).decode()}}"
'''


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # the n-th candidate node of the module, in walk order
    function: str
    line: int
    kind: str
    source: str

    @property
    def name(self) -> str:
        for needle, name in NAMES:
            if needle in self.source:
                return name
        return self.function

    @property
    def equivalent(self) -> str:
        return EQUIVALENT.get((self.function, self.source), "")

    @property
    def label(self) -> str:
        return f"{self.module}:{self.line} {self.function} [{self.kind}] {self.source}"


def _returns_true(node: ast.stmt) -> bool:
    return isinstance(node, ast.Return) and (
        node.value is None or (isinstance(node.value, ast.Constant) and node.value.value is True)
    )


def _only_logs(body: list[ast.stmt]) -> bool:
    return all(
        isinstance(s, ast.Expr)
        and isinstance(s.value, ast.Call)
        and isinstance(s.value.func, ast.Attribute)
        and isinstance(s.value.func.value, ast.Name)
        and s.value.func.value.id in {"log", "logging"}
        for s in body
    )


def _grants(body: list[ast.stmt]) -> bool:
    """A body that accepts: returns True (or nothing), or adds a person to those counted."""
    for s in body:
        if _returns_true(s):
            return True
        if isinstance(s, ast.Expr) and "people.add" in ast.unparse(s):
            return True
    return False


class _Finder(ast.NodeVisitor):
    """Every candidate node, in a fixed order: (node, function, kind)."""

    def __init__(self, only: set[str] | None = None) -> None:
        self.only = only
        self.found: list[tuple[ast.AST, str, str]] = []
        self.function: list[str] = []
        self.operands: set[int] = set()  # an operand is found once, from its outermost node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.function.append(node.name)
        self.generic_visit(node)
        self.function.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def _active(self) -> bool:
        return (
            bool(self.function)
            and not (set(self.function) & SKIPPED_FUNCTIONS)
            and (self.only is None or self.function[0] in self.only)
        )

    def _ands(self, expression: ast.AST) -> None:
        for sub in ast.walk(expression):
            if isinstance(sub, ast.BoolOp) and isinstance(sub.op, ast.And):
                for operand in sub.values:
                    if id(operand) not in self.operands:
                        self.operands.add(id(operand))
                        self.found.append((operand, self.function[-1], "and-operand True"))

    def visit_If(self, node: ast.If) -> None:
        if self._active() and not _only_logs(node.body):
            if _grants(node.body):
                self._ands(node.test)
            else:
                self.found.append((node, self.function[-1], "refusal off"))
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        if self._active() and node.value is not None:
            self._ands(node.value)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        if self._active():
            self._ands(node.test)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if self._active() and isinstance(node.func, ast.Name) and node.func.id == "signer_key":
            self.found.append((node, self.function[-1], "signature unverified"))
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        broad = any(
            isinstance(h.type, ast.Name) and h.type.id in {"Exception", "BaseException"}
            for h in node.handlers
        )
        if self._active() and broad:
            self.found.append((node, self.function[-1], "exception net off"))
        self.generic_visit(node)


def candidates(module: str) -> tuple[ast.Module, list[tuple[ast.AST, str, str]]]:
    tree = ast.parse(TARGETS[module].read_text(encoding="utf-8"))
    finder = _Finder(ONLY_FUNCTIONS.get(module))
    finder.visit(tree)
    return tree, finder.found


def mutants() -> list[Mutant]:
    found = []
    for module in TARGETS:
        _, nodes = candidates(module)
        for index, (node, function, kind) in enumerate(nodes):
            shown = node.test if isinstance(node, ast.If) else node
            source = " ".join(ast.unparse(shown).split())
            if isinstance(node, ast.Try):
                source = "try/except Exception around " + " ".join(
                    ast.unparse(node.body[0]).split()
                )
            found.append(
                Mutant(module, index, function, node.lineno, kind, source[:90])  # type: ignore[attr-defined]
            )
    return found


class _Swap(ast.NodeTransformer):
    def __init__(self, target: ast.AST, kind: str) -> None:
        self.target, self.kind = target, kind

    def visit(self, node: ast.AST):  # type: ignore[override]
        if node is not self.target:
            return super().visit(node)
        if self.kind == "refusal off":
            node.test = ast.Constant(False)  # type: ignore[attr-defined]
            return node
        if self.kind == "and-operand True":
            return ast.Constant(True)
        if self.kind == "signature unverified":
            node.func = ast.Name(UNVERIFIED, ast.Load())  # type: ignore[attr-defined]
            return node
        if self.kind == "exception net off":
            return node.body  # type: ignore[attr-defined]
        raise ValueError(self.kind)


def mutated_code(module: str, index: int):
    tree, nodes = candidates(module)
    node, _, kind = nodes[index]
    tree = _Swap(node, kind).visit(tree)
    tree.body.extend(ast.parse(UNVERIFIED_SOURCE).body)
    ast.fix_missing_locations(tree)
    return compile(tree, str(TARGETS[module]), "exec")


class _MutantLoader(importlib.abc.Loader):
    def __init__(self, code) -> None:
        self.code = code

    def create_module(self, spec):  # the ordinary module object
        return None

    def exec_module(self, module) -> None:
        exec(self.code, module.__dict__)


class _MutantFinder(importlib.abc.MetaPathFinder):
    def __init__(self, module: str, code) -> None:
        self.module, self.code = module, code

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module:
            return None
        return importlib.util.spec_from_file_location(
            fullname, TARGETS[fullname], loader=_MutantLoader(self.code)
        )


def run_child(module: str, index: int, pytest_args: list[str]) -> int:
    """In the child process: load the mutant ahead of the ordinary import, then pytest."""
    if index >= 0:
        sys.meta_path.insert(0, _MutantFinder(module, mutated_code(module, index)))
    import pytest

    return int(pytest.main(pytest_args))


def test_files() -> tuple[list[str], list[str]]:
    """(fast, slow): the test files that use the two modules or the signed decisions."""
    needles = re.compile(
        r"runbook\.decisions|activities\.gatekeeper|Gatekeeper\(|SignedDecision|guard_seal"
        r"|holds_role|runbook\.attestation"
    )
    fast, slow = [], []
    for folder in ("unit", "security", "workflows", "integration"):
        for path in sorted((ROOT / "tests" / folder).glob("test_*.py")):
            text = path.read_text(encoding="utf-8")
            if not needles.search(text):
                continue
            relative = str(path.relative_to(ROOT))
            if folder in ("unit", "security"):
                fast.append(relative)
            if folder in ("security", "workflows") or path.name == "test_signed_approvals.py":
                slow.append(relative)
    return fast, slow


def pytest_args(files: list[str], marker: str) -> list[str]:
    return [
        *files,
        "-x",
        "-q",
        "-rf",
        "--no-header",
        "-p",
        "no:cacheprovider",
        "-m",
        marker,
        "-W",
        "ignore",
    ]


def run_stage(mutant: Mutant | None, args: list[str]) -> tuple[int, str, float]:
    """pytest's exit code, the first failing test, the seconds it took."""
    command = [
        sys.executable,
        "-m",
        "bench.mutation",
        "--child",
        mutant.module if mutant else "-",
        str(mutant.index if mutant else -1),
        "--",
        *args,
    ]
    began = time.monotonic()
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    failed = re.search(r"^FAILED (.+?)(?: - .*)?$", done.stdout, re.MULTILINE)
    errored = re.search(r"^ERROR (.+?)(?: - .*)?$", done.stdout, re.MULTILINE)
    first = failed.group(1) if failed else errored.group(1) if errored else ""
    if done.returncode not in (0, 1) and not first:
        first = (done.stdout + done.stderr).strip().splitlines()[-1:][0] if done.stdout else ""
    return done.returncode, first, time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", action="append", default=[], help="mutants with these words")
    parser.add_argument("--fast-only", action="store_true", help="skip the slow stage")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        module, index = args.child
        return run_child(module, int(index), [a for a in rest if a != "--"])

    chosen = [
        m for m in mutants() if not args.only or any(w in m.name or w in m.label for w in args.only)
    ]
    if args.list:
        for number, mutant in enumerate(chosen, 1):
            print(f"{number:3} {mutant.name:<34} {mutant.label}")
        return 0

    fast_files, slow_files = test_files()
    fast = pytest_args(fast_files, "not integration and not reliability and not conformance")
    slow = pytest_args(slow_files, "not reliability and not conformance")
    print(f"fast tests: {' '.join(fast_files)}")
    print(f"slow tests (survivors of the fast ones only): {' '.join(slow_files)}")
    stages = [("fast", fast)] if args.fast_only else [("fast", fast), ("slow", slow)]
    for stage, stage_args in list(stages):
        code, first, seconds = run_stage(None, stage_args)
        if code != 0 and stage == "fast":
            print(f"the unchanged modules fail the fast tests ({first}); nothing to measure")
            return 2
        if code != 0:  # a slow test that fails unchanged cannot tell a mutant
            print(f"the unchanged modules fail the slow tests ({first}): fast tests only")
            stages = [("fast", fast)]
            continue
        print(f"unchanged modules: {stage} tests pass ({seconds:.0f} s)")

    survivors, errors, equivalent = [], [], []
    print(f"{len(chosen)} mutants")
    for number, mutant in enumerate(chosen, 1):
        result = "SURVIVED"
        for stage, stage_args in stages:
            code, first, seconds = run_stage(mutant, stage_args)
            if code == 1:
                result = f"killed ({stage}, {seconds:.0f} s) by {first}"
                break
            if code != 0:
                result = f"ERROR (pytest exit {code}: {first})"
                errors.append(mutant)
                break
        if result == "SURVIVED" and mutant.equivalent:
            result = f"equivalent ({mutant.equivalent})"
            equivalent.append(mutant)
        elif result == "SURVIVED":
            survivors.append(mutant)
        print(f"{number:3} {mutant.name:<34} {result}\n    {mutant.label}", flush=True)
    killed = len(chosen) - len(survivors) - len(errors) - len(equivalent)
    print(
        f"{killed}/{len(chosen)} killed, {len(equivalent)} equivalent, {len(survivors)} survived, "
        f"{len(errors)} errors"
    )
    return 0 if not survivors and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
