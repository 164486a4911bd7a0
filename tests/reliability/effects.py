"""Exactly once, counted where the effect lands: the emulators' effect logs (never the
workflow's own record), faults after the write, and kills pinned between an effect and
its completion.

Each emulator that takes writes serves the same admin paths under its own base:
`faults` (GET/PUT the rules), `effects?since=N` (what it changed), `holds` (answers held
back) and `holds/release` (let them go). `Emulator.of(endpoints, name)` finds the base."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.reliability.stack import Kill, WorkerProcess

# The writes of each emulator, as its fault rules name them (resource, verb).
KUBERNETES_WRITES = [
    ("deployments", "patch"),
    ("deployments", "update"),
    ("replicasets", "delete"),
    ("configmaps", "create"),
    ("pods", "create"),
    ("pods", "delete"),
    ("pods", "exec"),
]
CLOUD_SQL_WRITES = [("instances", "post"), ("backupRuns", "post"), ("instances", "patch")]
GITHUB_WRITES = [("dispatches", "post"), ("pending_deployments", "post")]
AFTER_WRITE_RATE = 0.2  # the share of writes whose answer is lost after they were applied


def after_write_mix(writes: list[tuple[str, str]], rate: float = AFTER_WRITE_RATE) -> list[dict]:
    """Rules that lose the answer to `rate` of the writes, after applying them: half answered
    500 or 503, half by a reset connection. (The rules fire independently: each at a third of
    the rate gives 1 - (1 - rate/3)^3, about 0.19 for 0.2.)"""
    rules = []
    for resource, verb in writes:
        base = {"resource": resource, "verb": verb, "when": "after", "rate": rate / 3}
        rules += [{**base, "status": 500}, {**base, "status": 503}, {**base, "drop": True}]
    return rules


def hold_once(resource: str, verb: str, name: str = "*") -> list[dict]:
    """A rule that holds the answer to the next such write (of the object `name`, for the
    Kubernetes API) until `release`."""
    return [
        {
            "resource": resource,
            "verb": verb,
            "name": name,
            "when": "after",
            "hold": True,
            "times": 1,
        }
    ]


@dataclass
class Emulator:
    """One emulator's admin paths."""

    name: str
    base: str  # ends without a slash

    @classmethod
    def of(cls, endpoints: dict[str, Any], name: str) -> Emulator:
        if name == "kubernetes":
            return cls(name, endpoints["sandbox_admin"].rstrip("/"))
        if name == "cloud_sql":
            return cls(name, endpoints["cloud_sql"].rstrip("/") + "/sandbox")
        if name == "github":
            return cls(name, endpoints["github_api"].rstrip("/") + "/sandbox")
        raise ValueError(f"no emulator {name!r}: kubernetes, cloud_sql or github")

    def _call(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base}/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def set_faults(self, rules: list[dict]) -> None:
        self._call("faults", "PUT", {"rules": rules})

    def mark(self) -> int:
        return self._call("effects?since=0")["last"]

    def effects(self, since: int = 0, kind: str | None = None) -> list[dict[str, Any]]:
        found = self._call(f"effects?since={since}")["entries"]
        return [e for e in found if kind is None or e["kind"] == kind]

    def held(self) -> list[dict[str, Any]]:
        return self._call("holds")["held"]

    def release(self, hold_id: int | None = None) -> int:
        query = "" if hold_id is None else f"?id={hold_id}"
        return self._call(f"holds/release{query}", "POST", {})["released"]


def spec_changes(effects: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The changes of deployment `name`'s spec (a rollout each): undo, restore, restart,
    a proxy switch or a CD deploy."""
    return [
        e
        for e in effects
        if e.get("resource") == "deployments" and e.get("name") == name and e.get("spec_changed")
    ]


def down_steps(effects: list[dict[str, Any]]) -> list[str]:
    """The migrations reverted, as the migrate commands run by exec printed them
    (`5/d add_walk_tags (3.1ms)`)."""
    steps = []
    for e in effects:
        if e["kind"] == "pods.exec":
            steps += [line for line in e.get("output", "").splitlines() if "/d " in line]
    return steps


def pin_all(emulator: Emulator, resource: str, verb: str, names: list[str]) -> None:
    """Arm one hold for each of `names` at once (runs side by side, one object each)."""
    emulator.set_faults([rule for name in names for rule in hold_once(resource, verb, name)])


async def kill_pinned_to(
    emulator: Emulator,
    resource: str,
    verb: str,
    worker: WorkerProcess,
    started: float,
    *,
    name: str = "*",
    armed: bool = False,
    timeout: float = 300.0,
) -> Kill:
    """Hold the answer to the next `verb` of `resource` (of object `name`), wait until the
    emulator has applied it and holds its answer, SIGKILL the worker (so the activity cannot
    complete), let the answer go to the dead connection, and start a new worker: the kill
    lands after the effect and before its record, provably. Returns the kill, named by the
    held write. `armed`: the hold was set already (`pin_all`); otherwise this sets it,
    replacing the emulator's other rules."""
    if not armed:
        await asyncio.to_thread(emulator.set_faults, hold_once(resource, verb, name))
    deadline = time.monotonic() + timeout
    while True:
        held = [
            h
            for h in await asyncio.to_thread(emulator.held)
            if h["resource"] == resource and name in ("*", h.get("name"))
        ]
        if held:
            break
        worker.check()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {verb} of {resource}/{name} reached {emulator.name} within {timeout:.0f}s"
            )
        await asyncio.sleep(0.05)
    worker.kill()
    await asyncio.to_thread(emulator.release, held[0]["id"])
    worker.start()
    return Kill(
        at=f"after {verb} {resource}/{held[0].get('name') or held[0].get('path', '')}",
        seconds=time.monotonic() - started,
    )


async def kill_pinned_where(
    emulator: Emulator,
    resource: str,
    verb: str,
    worker: WorkerProcess,
    started: float,
    match: Any,
    *,
    timeout: float = 300.0,
) -> Kill:
    """`kill_pinned_to` for the first write of `resource` and `verb` that `match` (a function
    of the held entry: the write's fields as the effect log names them, e.g. an exec's
    `command`) accepts: every such write is held meanwhile and those `match` refuses are let go
    at once, so the kill lands after that one write and before its record whatever other
    writes of the kind come first. Replaces the emulator's rules, and clears them after."""
    hold_all = {"resource": resource, "verb": verb, "when": "after", "hold": True}
    await asyncio.to_thread(emulator.set_faults, [hold_all])
    deadline = time.monotonic() + timeout
    chosen: dict[str, Any] | None = None
    try:
        while chosen is None:
            for held in await asyncio.to_thread(emulator.held):
                if held["resource"] != resource or held["verb"] != verb:
                    continue
                if match(held):
                    chosen = held
                    break
                await asyncio.to_thread(emulator.release, held["id"])
            if chosen is not None:
                break
            worker.check()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {verb} of {resource} that the match accepts reached {emulator.name} "
                    f"within {timeout:.0f}s"
                )
            await asyncio.sleep(0.05)
        worker.kill()
    finally:
        await asyncio.to_thread(emulator.set_faults, [])
        await asyncio.to_thread(emulator.release)  # the chosen answer goes to a dead connection
    worker.start()
    shown = chosen.get("name") or chosen.get("destination") or chosen.get("path", "")
    return Kill(at=f"after {verb} {resource}/{shown}", seconds=time.monotonic() - started)
