"""An event recorder that aggregates repeats the way client-go's recorder does."""

from __future__ import annotations

import copy
import time
from typing import Any

from .resources import EVENTS
from .store import Store

NODE_NAME = "sandbox-node-1"


class EventRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[tuple, str] = {}  # (object uid, reason, message) -> event name
        self._last_stamp = 0

    def record(
        self,
        involved: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        component: str,
        field_path: str | None = None,
    ) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta["uid"], reason, message)
        now = self.store.clock.timestamp()
        existing_name = self._seen.get(key)
        if existing_name is not None:
            existing = self.store.peek(EVENTS, namespace, existing_name)
            if existing is not None:
                bumped = copy.deepcopy(existing)
                bumped["count"] = existing.get("count", 1) + 1
                bumped["lastTimestamp"] = now
                self.store.update(EVENTS, bumped, check_version=False)
                return
        reference = {
            "kind": involved.get("kind"),
            "namespace": namespace,
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": involved.get("apiVersion"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            reference["fieldPath"] = field_path
        # Upstream names events <object>.<hex nanoseconds>, so listing them by
        # name lists them in the order they happened.
        stamp = max(time.time_ns(), self._last_stamp + 1)
        self._last_stamp = stamp
        name = f"{meta['name']}.{stamp:x}"
        source: dict[str, str] = {"component": component}
        if component == "kubelet":
            source["host"] = NODE_NAME
        event = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": reference,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": event_type,
            "reportingComponent": component,
            "reportingInstance": NODE_NAME if component == "kubelet" else "",
        }
        self.store.create(EVENTS, event, namespace)
        self._seen[key] = name
