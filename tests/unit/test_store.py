from __future__ import annotations

import asyncio

import pytest

from sandbox.kube import store as store_module
from sandbox.kube.clock import Clock
from sandbox.kube.errors import ApiError
from sandbox.kube.resources import CONFIGMAPS, NAMESPACES, PODS, REPLICASETS
from sandbox.kube.store import Store


@pytest.fixture
def store() -> Store:
    s = Store(Clock())
    s.create(NAMESPACES, {"metadata": {"name": "default"}})
    return s


def test_create_assigns_identity_and_rejects_duplicates(store: Store) -> None:
    cm = store.create(CONFIGMAPS, {"metadata": {"name": "a"}, "data": {}}, "default")
    assert cm["metadata"]["uid"] and cm["metadata"]["resourceVersion"] and cm["kind"] == "ConfigMap"
    with pytest.raises(ApiError) as info:
        store.create(CONFIGMAPS, {"metadata": {"name": "a"}}, "default")
    assert (info.value.code, info.value.reason) == (409, "AlreadyExists")


def test_stale_update_conflicts_and_noop_update_keeps_the_version(store: Store) -> None:
    cm = store.create(CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "1"}}, "default")
    same = store.update(CONFIGMAPS, cm)
    assert same["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
    changed = store.update(CONFIGMAPS, {**cm, "data": {"k": "2"}})
    with pytest.raises(ApiError) as info:
        store.update(CONFIGMAPS, {**cm, "data": {"k": "3"}})
    assert info.value.code == 409
    assert (
        store.get(CONFIGMAPS, "default", "a")["metadata"]["resourceVersion"]
        == changed["metadata"]["resourceVersion"]
    )


def test_generation_moves_with_spec_only(store: Store) -> None:
    rs = store.create(REPLICASETS, {"metadata": {"name": "r"}, "spec": {"replicas": 1}}, "default")
    assert (
        store.update(REPLICASETS, {**rs, "metadata": {**rs["metadata"], "labels": {"a": "b"}}})[
            "metadata"
        ]["generation"]
        == 1
    )
    rs = store.get(REPLICASETS, "default", "r")
    assert store.update(REPLICASETS, {**rs, "spec": {"replicas": 2}})["metadata"]["generation"] == 2
    rs = store.get(REPLICASETS, "default", "r")
    assert (
        store.update(REPLICASETS, {**rs, "status": {"replicas": 2}}, subresource="status")[
            "metadata"
        ]["generation"]
        == 2
    )


def test_cascading_delete_follows_owner_references(store: Store) -> None:
    rs = store.create(REPLICASETS, {"metadata": {"name": "r"}, "spec": {"replicas": 1}}, "default")
    ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "r",
        "uid": rs["metadata"]["uid"],
        "controller": True,
    }
    store.create(PODS, {"metadata": {"name": "p", "ownerReferences": [ref]}, "spec": {}}, "default")
    store.delete(REPLICASETS, "default", "r")
    assert store.peek(PODS, "default", "p") is None


def test_deleting_a_namespace_deletes_what_is_in_it(store: Store) -> None:
    store.create(NAMESPACES, {"metadata": {"name": "team"}})
    store.create(CONFIGMAPS, {"metadata": {"name": "a"}}, "team")
    store.delete(NAMESPACES, "", "team")
    assert store.peek(CONFIGMAPS, "team", "a") is None


async def test_watch_replays_from_a_version_and_expires_old_ones(store: Store, monkeypatch) -> None:
    first = store.create(CONFIGMAPS, {"metadata": {"name": "a"}}, "default")
    store.update(CONFIGMAPS, {**first, "data": {"k": "v"}})
    watcher = store.watch(
        CONFIGMAPS, "default", lambda o: True, first["metadata"]["resourceVersion"]
    )
    event_type, obj = await asyncio.wait_for(watcher.queue.get(), 1)
    assert (event_type, obj["data"]) == ("MODIFIED", {"k": "v"})
    assert watcher.queue.empty()
    store.unwatch(watcher)

    monkeypatch.setattr(store_module, "HISTORY_PER_RESOURCE", 3)
    small = Store(Clock())
    for i in range(6):
        small.create(CONFIGMAPS, {"metadata": {"name": f"c{i}"}}, "default")
    with pytest.raises(ApiError) as info:
        small.watch(CONFIGMAPS, None, lambda o: True, "1")
    assert info.value.code == 410


async def test_a_label_change_out_of_the_selector_is_a_delete_for_the_watcher(store: Store) -> None:
    cm = store.create(CONFIGMAPS, {"metadata": {"name": "a", "labels": {"app": "x"}}}, "default")
    watcher = store.watch(
        CONFIGMAPS,
        "default",
        lambda o: (o["metadata"].get("labels") or {}).get("app") == "x",
        cm["metadata"]["resourceVersion"],
    )
    store.update(CONFIGMAPS, {**cm, "metadata": {**cm["metadata"], "labels": {"app": "y"}}})
    assert (await asyncio.wait_for(watcher.queue.get(), 1))[0] == "DELETED"
