"""Watch-list (KEP-3157) as client-go 1.35+ asks for it: the current state as
ADDED events, a bookmark annotated `k8s.io/initial-events-end`, then changes;
and the apiserver's validation of the list options."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.conftest import RunningSandbox

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"
WATCH_LIST = {
    "watch": "1",
    "sendInitialEvents": "true",
    "resourceVersionMatch": "NotOlderThan",
    "allowWatchBookmarks": "true",
}


def read_events(
    sandbox: RunningSandbox, path: str, query: dict[str, str], until: int, timeout: float = 10
) -> list[dict[str, Any]]:
    """Open a watch and read `until` events (or what comes before it ends)."""
    url = urllib.parse.urlsplit(sandbox.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        connection.request("GET", f"{path}?{urllib.parse.urlencode(query)}")
        response = connection.getresponse()
        assert response.status == 200, response.read()
        events = []
        while len(events) < until:
            line = response.readline()
            if not line:
                break
            events.append(json.loads(line))
        return events
    finally:
        connection.close()


def get_json(
    sandbox: RunningSandbox, path: str, query: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(
            f"{sandbox.url}{path}?{urllib.parse.urlencode(query)}", timeout=10
        ) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_watch_list_sends_the_state_then_the_initial_events_end_bookmark(
    sandbox: RunningSandbox,
) -> None:
    _, listed = get_json(sandbox, PODS, {"labelSelector": "app=tekutoko-api"})
    names = sorted(p["metadata"]["name"] for p in listed["items"])
    events = read_events(
        sandbox, PODS, {**WATCH_LIST, "labelSelector": "app=tekutoko-api"}, until=len(names) + 1
    )
    assert [e["type"] for e in events] == ["ADDED"] * len(names) + ["BOOKMARK"]
    assert sorted(e["object"]["metadata"]["name"] for e in events[:-1]) == names
    bookmark = events[-1]["object"]
    assert bookmark["kind"] == "Pod" and bookmark["apiVersion"] == "v1"
    assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert set(bookmark["metadata"]) == {"resourceVersion", "annotations"}
    newest = max(int(e["object"]["metadata"]["resourceVersion"]) for e in events[:-1])
    assert int(bookmark["metadata"]["resourceVersion"]) >= newest


def test_after_the_bookmark_the_watch_goes_on_with_changes(sandbox: RunningSandbox) -> None:
    query = {**WATCH_LIST, "fieldSelector": "metadata.name=tekutoko-api", "timeoutSeconds": "10"}

    def scale_soon() -> None:
        request = urllib.request.Request(
            f"{sandbox.url}{DEPLOYMENTS}/tekutoko-api/scale",
            method="PATCH",
            data=b'{"spec":{"replicas":4}}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    timer = threading.Timer(0.5, scale_soon)
    timer.start()
    try:
        events = read_events(sandbox, DEPLOYMENTS, query, until=3)
    finally:
        timer.join()
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK", "MODIFIED"]
    assert events[2]["object"]["spec"]["replicas"] == 4
    assert int(events[2]["object"]["metadata"]["resourceVersion"]) > int(
        events[1]["object"]["metadata"]["resourceVersion"]
    )


def test_without_allow_watch_bookmarks_there_is_no_bookmark(sandbox: RunningSandbox) -> None:
    query = {
        **WATCH_LIST,
        "allowWatchBookmarks": "false",
        "fieldSelector": "metadata.name=tekutoko-api",
        "timeoutSeconds": "1",
    }
    assert [e["type"] for e in read_events(sandbox, DEPLOYMENTS, query, until=5)] == ["ADDED"]


def test_send_initial_events_false_starts_after_the_version(sandbox: RunningSandbox) -> None:
    _, listed = get_json(sandbox, DEPLOYMENTS, {})
    query = {
        **WATCH_LIST,
        "sendInitialEvents": "false",
        "resourceVersion": listed["metadata"]["resourceVersion"],
        "timeoutSeconds": "1",
    }
    assert read_events(sandbox, DEPLOYMENTS, query, until=5) == []


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        (
            {"watch": "1", "sendInitialEvents": "true"},
            "resourceVersionMatch",
            "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ),
        (
            {"watch": "1", "sendInitialEvents": "true", "resourceVersionMatch": "Exact"},
            "resourceVersionMatch",
            'Unsupported value: "Exact": supported values: "NotOlderThan"',
        ),
        (
            {"watch": "1", "resourceVersion": "5", "resourceVersionMatch": "NotOlderThan"},
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
            "provided",
        ),
        (
            {"sendInitialEvents": "true"},
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for list",
        ),
        (
            {"resourceVersionMatch": "NotOlderThan"},
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
    ],
)
def test_list_options_are_validated_as_the_apiserver_does(
    sandbox: RunningSandbox, query: dict[str, str], field: str, message: str
) -> None:
    status, body = get_json(sandbox, DEPLOYMENTS, query)
    assert status == 422
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Invalid", 422)
    assert body["message"].startswith('ListOptions.meta.k8s.io "" is invalid: ')
    assert {"field": field, "message": message} in [
        {"field": c["field"], "message": c["message"]} for c in body["details"]["causes"]
    ]


def test_a_legacy_watch_from_a_version_still_replays_only_later_changes(
    sandbox: RunningSandbox,
) -> None:
    _, listed = get_json(sandbox, DEPLOYMENTS, {})
    rv = listed["metadata"]["resourceVersion"]
    request = urllib.request.Request(
        f"{sandbox.url}{DEPLOYMENTS}/tekutoko-api/scale",
        method="PATCH",
        data=b'{"spec":{"replicas":5}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    urllib.request.urlopen(request, timeout=10).close()
    events = read_events(
        sandbox,
        DEPLOYMENTS,
        {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"},
        until=1,
    )
    assert events[0]["type"] == "MODIFIED" and events[0]["object"]["spec"]["replicas"] == 5
