"""The object store: objects, resource versions, owner references and watches.

Stored objects are never mutated in place: every write stores a fresh copy, so the
watch history can keep references to old versions for free, and readers get copies.
"""

from __future__ import annotations

import asyncio
import copy
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .clock import Clock
from .resources import ALL, NAMESPACES, ResourceType
from .selectors import Predicate

Obj = dict[str, Any]
Listener = Callable[[str, ResourceType, Obj, Obj | None], None]

NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
HISTORY_PER_RESOURCE = 50_000


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(NAME_SUFFIX_ALPHABET) for _ in range(length))


@dataclass(eq=False)
class Watcher:
    resource: ResourceType
    namespace: str | None
    predicate: Predicate
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def offer(self, event_type: str, obj: Obj, old: Obj | None) -> None:
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return
        now_matches = event_type != "DELETED" and self.predicate(obj)
        before_matched = old is not None and self.predicate(old)
        if event_type == "DELETED":
            if self.predicate(obj):
                self.queue.put_nowait(("DELETED", obj))
        elif now_matches:
            self.queue.put_nowait(("MODIFIED" if before_matched else "ADDED", obj))
        elif before_matched:
            self.queue.put_nowait(("DELETED", obj))


class Store:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._children: dict[str, set[tuple[ResourceType, str, str]]] = {}
        self._history: dict[str, deque[tuple[int, str, Obj, Obj | None]]] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._listeners: list[Listener] = []

    # -- reading ---------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def peek(self, resource: ResourceType, namespace: str, name: str) -> Obj | None:
        """The stored object itself, read-only, for callers inside the sandbox."""
        return self._objects.get(resource.key, {}).get((namespace, name))

    def get(self, resource: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.peek(resource, namespace, name)
        if obj is None:
            raise errors.not_found(resource.group, resource.plural, name)
        return copy.deepcopy(obj)

    def iter(self, resource: ResourceType, namespace: str | None = None) -> Iterable[Obj]:
        """Stored objects, read-only, in namespace/name order."""
        items = self._objects.get(resource.key, {})
        for key in sorted(items):
            if namespace is None or key[0] == namespace:
                yield items[key]

    def children(self, owner_uid: str, resource: ResourceType | None = None) -> list[Obj]:
        """Objects whose ownerReferences name `owner_uid`, read-only."""
        found = []
        for res, ns, name in sorted(
            self._children.get(owner_uid, ()), key=lambda t: (t[0].key, t[1], t[2])
        ):
            if resource is not None and res is not resource:
                continue
            obj = self.peek(res, ns, name)
            if obj is not None:
                found.append(obj)
        return found

    def count(self, resource: ResourceType) -> int:
        return len(self._objects.get(resource.key, {}))

    # -- writing ---------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create(self, resource: ResourceType, obj: Obj, namespace: str = "") -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        ns = meta.get("namespace", "")
        if not meta.get("name"):
            if meta.get("generateName"):
                bucket = self._objects.get(resource.key, {})
                while True:
                    candidate = meta["generateName"] + random_suffix()
                    if (ns, candidate) not in bucket:
                        break
                meta["name"] = candidate
            else:
                raise errors.invalid(
                    resource.group,
                    resource.kind,
                    "",
                    [
                        (
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
        name = meta["name"]
        bucket = self._objects.setdefault(resource.key, {})
        if (ns, name) in bucket:
            raise errors.already_exists(resource.group, resource.plural, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.clock.timestamp()
        meta["resourceVersion"] = self._next_rv()
        meta.pop("deletionTimestamp", None)
        if resource.has_generation:
            meta["generation"] = 1
        obj["apiVersion"] = resource.api_version
        obj["kind"] = resource.kind
        bucket[(ns, name)] = obj
        self._index_owners(resource, obj, None)
        self._publish("ADDED", resource, obj, None)
        return copy.deepcopy(obj)

    def update(
        self,
        resource: ResourceType,
        obj: Obj,
        *,
        subresource: str | None = None,
        check_version: bool = True,
    ) -> Obj:
        """Replace an object; `subresource='status'` replaces only its status.

        A resourceVersion in `obj` that is not the stored one is a 409 Conflict, as
        the API server's optimistic concurrency does it.
        """
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace", "") if resource.namespaced else ""
        name = meta.get("name", "")
        current = self.peek(resource, ns, name)
        if current is None:
            raise errors.not_found(resource.group, resource.plural, name)
        sent_rv = meta.get("resourceVersion")
        if check_version and sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(resource.group, resource.plural, name)
        new = copy.deepcopy(obj)
        if subresource == "status":
            updated = copy.deepcopy(current)
            updated["status"] = new.get("status", {})
            new = updated
        else:
            new_meta = new.setdefault("metadata", {})
            for immutable in (
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "generation",
                "deletionTimestamp",
            ):
                if immutable in current["metadata"]:
                    new_meta[immutable] = current["metadata"][immutable]
                else:
                    new_meta.pop(immutable, None)
            if "status" in resource.subresources:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            if resource.has_generation and new.get("spec") != current.get("spec"):
                new_meta["generation"] = current["metadata"].get("generation", 1) + 1
        new["apiVersion"] = resource.api_version
        new["kind"] = resource.kind
        if new == {
            **current,
            "metadata": {
                **current["metadata"],
                "resourceVersion": new["metadata"].get("resourceVersion"),
            },
        }:
            return copy.deepcopy(current)  # no-op writes do not bump the version, as upstream
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[resource.key][(ns, name)] = new
        self._index_owners(resource, new, current)
        self._publish("MODIFIED", resource, new, current)
        return copy.deepcopy(new)

    def delete(
        self, resource: ResourceType, namespace: str, name: str, *, propagation: str = "Background"
    ) -> Obj:
        ns = namespace if resource.namespaced else ""
        current = self.peek(resource, ns, name)
        if current is None:
            raise errors.not_found(resource.group, resource.plural, name)
        uid = current["metadata"]["uid"]
        gone = copy.deepcopy(current)
        gone["metadata"]["deletionTimestamp"] = self.clock.timestamp()
        gone["metadata"]["resourceVersion"] = self._next_rv()
        del self._objects[resource.key][(ns, name)]
        self._index_owners(resource, None, current)
        self._publish("DELETED", resource, gone, current)
        dependents = list(self._children.pop(uid, ()))
        for child_res, child_ns, child_name in dependents:
            child = self.peek(child_res, child_ns, child_name)
            if child is None:
                continue
            if propagation == "Orphan":
                orphan = copy.deepcopy(child)
                orphan["metadata"]["ownerReferences"] = [
                    ref
                    for ref in child["metadata"].get("ownerReferences", [])
                    if ref.get("uid") != uid
                ]
                if not orphan["metadata"]["ownerReferences"]:
                    del orphan["metadata"]["ownerReferences"]
                self.update(child_res, orphan, check_version=False)
            else:
                self.delete(child_res, child_ns, child_name, propagation=propagation)
        if resource is NAMESPACES:
            for other in ALL:
                for obj in list(self.iter(other, name)) if other.namespaced else ():
                    if self.peek(other, name, obj["metadata"]["name"]) is not None:
                        self.delete(other, name, obj["metadata"]["name"])
        return gone

    # -- watching --------------------------------------------------------------

    def watch(
        self,
        resource: ResourceType,
        namespace: str | None,
        predicate: Predicate,
        since: str | None,
        *,
        initial_events: bool | None = None,
    ) -> Watcher:
        """Register a watcher; events after `since` are queued first.

        `initial_events=None` is the legacy watch: an empty or "0" `since` starts
        with ADDED events for the current state, any other version with the events
        after it. `True` starts with the current state whatever `since` says (the
        store is always at least as new as any version it gave out); `False` starts
        after `since`, or now when `since` is empty or "0".
        A version older than the kept history is 410 Gone, as etcd compaction makes it.
        """
        watcher = Watcher(resource, namespace, predicate)
        legacy_since = not since or since == "0"
        start = 0
        if not legacy_since:
            try:
                start = int(since or "")
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {since!r}") from None
        if initial_events is None:
            initial_events = legacy_since
        if initial_events:
            for obj in self.iter(resource, namespace):
                if predicate(obj):
                    watcher.queue.put_nowait(("ADDED", obj))
        elif not legacy_since:
            history = self._history.get(resource.key, deque())
            if history and start < history[0][0] - 1 and len(history) == history.maxlen:
                raise errors.gone(f"too old resource version: {start} ({history[0][0] - 1})")
            for rv, event_type, obj, old in history:
                if rv > start:
                    watcher.offer(event_type, obj, old)
        self._watchers.setdefault(resource.key, set()).add(watcher)
        return watcher

    def close_watches(self) -> None:
        """End every open watch, as an API server does when it shuts down."""
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(("CLOSED", None))

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.resource.key, set()).discard(watcher)

    # -- internals -------------------------------------------------------------

    def _publish(self, event_type: str, resource: ResourceType, obj: Obj, old: Obj | None) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self._history.setdefault(resource.key, deque(maxlen=HISTORY_PER_RESOURCE)).append(
            (rv, event_type, obj, old)
        )
        for watcher in list(self._watchers.get(resource.key, ())):
            watcher.offer(event_type, obj, old)
        for listener in self._listeners:
            listener(event_type, resource, obj, old)

    def _index_owners(self, resource: ResourceType, new: Obj | None, old: Obj | None) -> None:
        def owners(obj: Obj | None) -> set[str]:
            if obj is None:
                return set()
            return {
                ref["uid"] for ref in obj["metadata"].get("ownerReferences", []) if ref.get("uid")
            }

        source = new or old
        assert source is not None
        key = (resource, source["metadata"].get("namespace", ""), source["metadata"]["name"])
        for uid in owners(old) - owners(new):
            self._children.get(uid, set()).discard(key)
        for uid in owners(new):
            self._children.setdefault(uid, set()).add(key)
