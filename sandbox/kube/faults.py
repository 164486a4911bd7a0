"""Fault injection and the request log, the two things tests use to see and
shape what the API does."""

from __future__ import annotations

import json
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..scenario import FaultRule

REQUEST_LOG_KEPT = 200_000


@dataclass
class FaultDecision:
    status: int | None = None
    retry_after: int = 0
    latency_ms: float = 0.0
    drop: bool = False


class FaultInjector:
    def __init__(self, rules: list[FaultRule] | None = None, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self._rules: list[list[Any]] = []  # [rule, remaining times]
        self.injected: Counter[tuple[str, int]] = Counter()  # (resource, status) -> answers faulted
        self.replace(rules or [])

    def replace(self, rules: list[FaultRule]) -> None:
        self._rules = [[rule, rule.times] for rule in rules]

    def rules(self) -> list[dict[str, Any]]:
        return [{**rule.model_dump(), "remaining": remaining} for rule, remaining in self._rules]

    def decide(self, resource: str, verb: str) -> FaultDecision:
        decision = FaultDecision()
        for entry in self._rules:
            rule, remaining = entry
            if rule.resource not in ("*", resource) or rule.verb not in ("*", verb):
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
            if rule.status is not None and decision.status is None:
                decision.status = rule.status
                decision.retry_after = rule.retry_after_seconds
                self.injected[(resource, rule.status)] += 1
        return decision


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
