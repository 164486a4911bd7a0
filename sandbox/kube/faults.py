"""Fault injection, the request log and the effect log: what tests use to shape
what an API does and to count what it really changed."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ..scenario import FaultRule

REQUEST_LOG_KEPT = 200_000
HOLD_LIMIT_SECONDS = 300.0  # a held answer a test forgot is let go after this


@dataclass
class FaultDecision:
    status: int | None = None
    retry_after: int = 0
    latency_ms: float = 0.0
    drop: bool = False
    hold: bool = False

    @property
    def faulted(self) -> bool:
        return self.status is not None or self.drop or self.hold or self.latency_ms > 0


@dataclass
class Held:
    """An answer to an applied write, kept back until a test lets it go."""

    id: int
    what: dict[str, Any]
    since: float = field(default_factory=time.time)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "since": self.since, **self.what}


class FaultInjector:
    def __init__(self, rules: list[FaultRule] | None = None, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self._rules: list[list[Any]] = []  # [rule, remaining times]
        self.injected: Counter[tuple[str, int]] = Counter()  # (resource, status) -> answers faulted
        self.held: dict[int, Held] = {}
        self._hold_ids = itertools.count(1)
        self.replace(rules or [])

    def replace(self, rules: list[FaultRule]) -> None:
        self._rules = [[rule, rule.times] for rule in rules]

    def rules(self) -> list[dict[str, Any]]:
        return [{**rule.model_dump(), "remaining": remaining} for rule, remaining in self._rules]

    def decide(
        self, resource: str, verb: str, when: str = "before", name: str | None = None
    ) -> FaultDecision:
        """The faults for one request `before` it is applied, or `after` it was (writes only:
        the caller asks for `after` once the work is done)."""
        decision = FaultDecision()
        for entry in self._rules:
            rule, remaining = entry
            if rule.resource not in ("*", resource) or rule.verb not in ("*", verb):
                continue
            if rule.when != when or rule.name not in ("*", name):
                continue
            if remaining is not None and remaining <= 0:
                continue
            if self._random.random() >= rule.rate:
                continue
            if remaining is not None:
                entry[1] = remaining - 1
            decision.latency_ms += rule.latency_ms
            if rule.drop:
                decision.drop = True
            if rule.hold:
                decision.hold = True
            if rule.status is not None and decision.status is None:
                decision.status = rule.status
                decision.retry_after = rule.retry_after_seconds
                self.injected[(resource, rule.status)] += 1
        return decision

    async def after_write(self, resource: str, verb: str, what: dict[str, Any]) -> FaultDecision:
        """The faults for the answer to a write already applied: waits out a hold (until
        `release`, at most HOLD_LIMIT_SECONDS) and any latency, then returns what is left for
        the caller to answer with (a status, or a dropped connection)."""
        decision = self.decide(resource, verb, "after", what.get("name"))
        if decision.hold:
            held = Held(next(self._hold_ids), {"resource": resource, "verb": verb, **what})
            self.held[held.id] = held
            try:
                await asyncio.wait_for(held.released.wait(), HOLD_LIMIT_SECONDS)
            except TimeoutError:
                pass
            finally:
                self.held.pop(held.id, None)
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
        return decision

    def holding(self) -> list[dict[str, Any]]:
        return [held.view() for held in self.held.values()]

    def release(self, hold_id: int | None = None) -> int:
        """Let the held answers go (one, or all); returns how many."""
        chosen = [h for h in self.held.values() if hold_id is None or h.id == hold_id]
        for held in chosen:
            held.released.set()
        return len(chosen)


def drop_connection(request: Any, *, after_write: bool = False) -> NoReturn:
    """Reset the caller's connection, as a fault says (the caller logs status 0)."""
    if request.transport is not None:
        request.transport.abort()
    raise ConnectionResetError(
        "dropped by fault injection" + (" after the write" if after_write else "")
    )


def rollout_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A Deployment's generation and images: what an effect entry compares before and after."""
    template = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {
        "generation": obj.get("metadata", {}).get("generation", 0),
        "images": [c.get("image") for c in template.get("containers") or []],
    }


def rollout_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fields a Deployment's effect entry carries, from two `rollout_fields`."""
    return {
        "generation_before": before["generation"],
        "generation": after["generation"],
        "images_before": before["images"],
        "images": after["images"],
        "spec_changed": before["generation"] != after["generation"],
    }


class EffectLog:
    """What an emulator changed, one entry per applied write, whatever its answer said: the
    count tests hold "exactly once" to, independent of the caller's own record."""

    def __init__(self) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_KEPT)
        self._seq = 0

    def record(self, kind: str, **fields: Any) -> None:
        self._seq += 1
        self._entries.append({"seq": self._seq, "time": time.time(), "kind": kind, **fields})

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._entries if e["seq"] > seq]

    @property
    def last_seq(self) -> int:
        return self._seq


def admin_routes(app: Any, faults: FaultInjector, effects: EffectLog) -> None:
    """`/sandbox/effects`, `/sandbox/holds` and `/sandbox/holds/release` on an emulator's app."""
    from aiohttp import web

    async def get_effects(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response({"entries": effects.since(since), "last": effects.last_seq})

    async def get_holds(request: web.Request) -> web.Response:
        return web.json_response({"held": faults.holding()})

    async def release(request: web.Request) -> web.Response:
        raw = request.query.get("id")
        if raw is not None and not raw.isdigit():
            return web.json_response({"error": f"id {raw!r} is not a number"}, status=400)
        return web.json_response({"released": faults.release(int(raw) if raw else None)})

    app.router.add_get("/sandbox/effects", get_effects)
    app.router.add_get("/sandbox/holds", get_holds)
    app.router.add_post("/sandbox/holds/release", release)


class RequestLog:
    """Every API request with its outcome; kept in memory and appended to a JSONL file."""

    def __init__(self, path: Path | None = None) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_KEPT)
        self._seq = 0
        self._file = path.open("a", encoding="utf-8", buffering=1) if path else None

    def record(self, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        entry = {"seq": self._seq, "time": time.time(), **fields}
        self._entries.append(entry)
        if self._file is not None:
            self._file.write(json.dumps(entry) + "\n")
        return entry

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._entries if e["seq"] > seq]

    @property
    def last_seq(self) -> int:
        return self._seq

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
