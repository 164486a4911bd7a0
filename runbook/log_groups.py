"""Grouping a service's error lines the way an engineer reads `kubectl logs
--tail=200`: the same message from many pods, with ids, numbers and addresses
varying, is one problem. Pure: the lines come in, the groups go out.

A line is an error when its level says so: logfmt (`level=error`), JSON
(`"severity": "ERROR"` or `"level": "error"`), or a leading `ERROR`/`FATAL`
word. Everything else is context, not evidence."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field

ERROR_LEVELS = {"error", "err", "fatal", "critical", "crit", "panic", "alert", "emergency"}
SAMPLE_LENGTH = 300

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:?\d{2})?\s+")
_LOGFMT_PAIR = re.compile(r'(\w[\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_LEADING_LEVEL = re.compile(r"^\[?(ERROR|FATAL|CRITICAL|PANIC)\]?[:\s]", re.IGNORECASE)
# Variable parts of a message, most specific first: the order matters, so a
# UUID is not read as a run of hex words and numbers.
_VARIABLE_PARTS = [
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<addr>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"'[^']*'"), "'<value>'"),
    (re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m|h|%)?\b"), "<n>"),
]


class LogLine(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    pod: str
    container: str = ""
    text: str


class ErrorGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    signature: str = Field(description="the message with its varying parts replaced")
    count: int
    pods: list[str]
    first_seen: str = Field("", description="the first line's timestamp, as the log wrote it")
    last_seen: str = ""
    sample: str = Field(description="one full line, cut to a readable length")


def error_groups(lines: list[LogLine], *, limit: int = 10) -> list[ErrorGroup]:
    """The error lines grouped by signature, the most frequent first (ties: first seen first)."""
    groups: dict[str, ErrorGroup] = {}
    for line in lines:
        parsed = _error_message(line.text)
        if parsed is None:
            continue
        timestamp, message = parsed
        signature = normalise(message)
        group = groups.get(signature)
        if group is None:
            groups[signature] = ErrorGroup(
                signature=signature,
                count=1,
                pods=[line.pod],
                first_seen=timestamp,
                last_seen=timestamp,
                sample=line.text[:SAMPLE_LENGTH],
            )
            continue
        group.count += 1
        if line.pod not in group.pods:
            group.pods.append(line.pod)
        if timestamp:
            group.last_seen = timestamp
    ordered = sorted(groups.values(), key=lambda g: -g.count)  # stable: first seen wins a tie
    return ordered[:limit]


def normalise(message: str) -> str:
    for pattern, replacement in _VARIABLE_PARTS:
        message = pattern.sub(replacement, message)
    return " ".join(message.split())


def _error_message(text: str) -> tuple[str, str] | None:
    """(timestamp, message) of an error line, or None for any other line."""
    timestamp = ""
    match = _TIMESTAMP.match(text)
    if match:
        timestamp = match.group(0).strip()
        text = text[match.end() :]
    body = text.strip()
    if body.startswith("{"):
        return _json_error(timestamp, body)
    pairs = {key.lower(): _unquote(value) for key, value in _LOGFMT_PAIR.findall(body)}
    if "level" in pairs or "severity" in pairs:
        level = (pairs.get("level") or pairs.get("severity") or "").lower()
        if level not in ERROR_LEVELS:
            return None
        return timestamp, pairs.get("msg") or pairs.get("message") or body
    leading = _LEADING_LEVEL.match(body)
    if leading:
        return timestamp, body[leading.end() :].strip()
    return None


def _json_error(timestamp: str, body: str) -> tuple[str, str] | None:
    try:
        record = json.loads(body)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    level = str(record.get("severity") or record.get("level") or "").lower()
    if level not in ERROR_LEVELS:
        return None
    message = record.get("message") or record.get("msg") or body
    stamp = timestamp or str(record.get("timestamp") or record.get("time") or "")
    return stamp, str(message)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value
