"""Watches as the API server serves them, watch-list (KEP-3157) included.

Since client-go 1.35 a reflector lists by streaming watch:
`?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true`.
The server answers with an ADDED event per object in the current state, then a
BOOKMARK whose object carries only kind, apiVersion, the resourceVersion of that
state and the annotation `k8s.io/initial-events-end: "true"`, then the changes
after it. A client that never gets the bookmark waits for it forever.

The list options are decoded, defaulted and validated as apimachinery does
(`meta/internalversion`: conversion, `SetListOptionsDefaults`,
`validation.ValidateListOptions`), with the WatchList feature gate on; errors are
`422 Invalid` on `ListOptions.meta.k8s.io`, as the apiserver's list handler answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import errors
from .resources import ResourceType
from .selectors import Predicate
from .store import Store

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
NOT_OLDER_THAN = "NotOlderThan"
EXACT = "Exact"
WATCH_IDLE_SECONDS = 1800


def query_bool(value: str | None) -> bool:
    """apimachinery's conversion of a query parameter to a bool: only a missing
    value, "false" and "0" are false; anything else, "" included, is true."""
    return value is not None and value not in ("false", "0")


@dataclass
class ListOptions:
    watch: bool = False
    resource_version: str = ""
    resource_version_match: str = ""
    send_initial_events: bool | None = None
    allow_watch_bookmarks: bool = False
    continue_token: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ListOptions:
        sent = query.get("sendInitialEvents")
        options = cls(
            watch=query_bool(query.get("watch")),
            resource_version=query.get("resourceVersion", ""),
            resource_version_match=query.get("resourceVersionMatch", ""),
            send_initial_events=None if sent is None else query_bool(sent),
            allow_watch_bookmarks=query_bool(query.get("allowWatchBookmarks")),
            continue_token=query.get("continue", ""),
        )
        options.set_defaults()
        options.validate()
        return options

    def set_defaults(self) -> None:
        """`SetListOptionsDefaults` with the WatchList gate on: a watch from "" or
        "0" without either option is a watch-list (it always sent the state first)."""
        if self.send_initial_events is not None or self.resource_version_match:
            return
        if self.watch and self.resource_version in ("", "0"):
            self.send_initial_events = True
            self.resource_version_match = NOT_OLDER_THAN

    def validate(self) -> None:
        causes = self._watch_causes() if self.watch else self._list_causes()
        if causes:
            raise errors.invalid("meta.k8s.io", "ListOptions", "", causes)

    def _list_causes(self) -> list[tuple[str, str, str]]:
        causes = []
        match = self.resource_version_match
        if match:
            if not self.resource_version:
                causes.append(
                    _forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    )
                )
            if self.continue_token:
                causes.append(
                    _forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    )
                )
            if match not in (EXACT, NOT_OLDER_THAN):
                causes.append(
                    _not_supported("resourceVersionMatch", match, [EXACT, NOT_OLDER_THAN, ""])
                )
            if match == EXACT and self.resource_version == "0":
                causes.append(
                    _forbidden(
                        "resourceVersionMatch",
                        'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                    )
                )
        if self.send_initial_events is not None:
            causes.append(
                _forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list")
            )
        return causes

    def _watch_causes(self) -> list[tuple[str, str, str]]:
        causes = []
        match = self.resource_version_match
        if self.send_initial_events is not None and match != NOT_OLDER_THAN:
            causes.append(
                _forbidden(
                    "resourceVersionMatch",
                    f"sendInitialEvents requires setting resourceVersionMatch to {NOT_OLDER_THAN}",
                )
            )
        if match:
            if self.send_initial_events is None:
                causes.append(
                    _forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
                        "provided",
                    )
                )
            if match != NOT_OLDER_THAN:
                causes.append(_not_supported("resourceVersionMatch", match, [NOT_OLDER_THAN]))
            if self.continue_token:
                causes.append(
                    _forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    )
                )
        return causes

    @property
    def is_watch_list(self) -> bool:
        """The request a reflector makes: initial events ended by a bookmark."""
        return bool(self.send_initial_events) and self.allow_watch_bookmarks


def _forbidden(field: str, detail: str) -> tuple[str, str, str]:
    return field, "FieldValueForbidden", f"Forbidden: {detail}"


def _not_supported(field: str, value: str, supported: list[str]) -> tuple[str, str, str]:
    listed = ", ".join(f'"{s}"' for s in supported)
    return (
        field,
        "FieldValueNotSupported",
        f'Unsupported value: "{value}": supported values: {listed}',
    )


def initial_events_end(resource: ResourceType, resource_version: str) -> dict[str, Any]:
    """The bookmark that ends the initial events: nothing but the type and the version."""
    return {
        "kind": resource.kind,
        "apiVersion": resource.api_version,
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {INITIAL_EVENTS_END: "true"},
        },
    }


async def serve(
    store: Store,
    request: web.Request,
    resource: ResourceType,
    namespace: str | None,
    predicate: Predicate,
    options: ListOptions,
) -> web.StreamResponse:
    """Stream watch events as newline-delimited JSON until the timeout, the
    client leaving or the store closing its watches."""
    if options.send_initial_events is None:  # a plain watch from a version
        watcher = store.watch(resource, namespace, predicate, options.resource_version)
    else:
        watcher = store.watch(
            resource,
            namespace,
            predicate,
            options.resource_version,
            initial_events=options.send_initial_events,
        )
        if options.is_watch_list:
            watcher.queue.put_nowait(
                ("BOOKMARK", initial_events_end(resource, str(store.resource_version)))
            )
    try:
        timeout = float(request.query.get("timeoutSeconds", WATCH_IDLE_SECONDS))
    except ValueError:
        store.unwatch(watcher)
        raise errors.bad_request(
            f"invalid timeoutSeconds {request.query.get('timeoutSeconds')!r}"
        ) from None
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                event_type, obj = await asyncio.wait_for(watcher.queue.get(), timeout=remaining)
            except TimeoutError:
                break
            if event_type == "CLOSED":
                break
            await response.write((json.dumps({"type": event_type, "object": obj}) + "\n").encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        store.unwatch(watcher)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response
