"""The release's own pods, watched (a Kubernetes watch, not a poll): a pod of the
Deployment's current ReplicaSet that restarted, went into CrashLoopBackOff, or was
Ready (so took traffic) and then lost its readiness is a sign the runbook names
("Pod再起動が頻発している"). A pod not yet ready after it started, or being deleted
(a rollout or a rollback replacing it), is not."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes.aio import watch

log = logging.getLogger(__name__)
WATCH_SECONDS = 60  # one watch request; the stream is opened again after it


@dataclass
class PodSeen:
    ready_once: bool = False
    restarts: int = 0
    waiting: str = ""
    ready: bool = False
    deleting: bool = False


def _container_states(pod: dict[str, Any]) -> tuple[bool, int, str]:
    """(ready, restarts, a waiting reason) over the pod's containers."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ready = bool(statuses) and all(s.get("ready") for s in statuses)
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    waiting = next(
        (
            ((s.get("state") or {}).get("waiting") or {}).get("reason", "")
            for s in statuses
            if (s.get("state") or {}).get("waiting")
        ),
        "",
    )
    return ready, restarts, waiting


class ReleasePods:
    """What the watch saw of one ReplicaSet's pods (`pod-template-hash`)."""

    def __init__(self, core: Any, namespace: str, template_hash: str) -> None:
        self.core = core
        self.namespace = namespace
        self.template_hash = template_hash
        self.pods: dict[str, PodSeen] = {}
        self._task: asyncio.Task[None] | None = None

    def saw(self, event_type: str, pod: dict[str, Any]) -> None:
        name = (pod.get("metadata") or {}).get("name", "")
        if event_type == "DELETED":
            self.pods.pop(name, None)
            return
        seen = self.pods.setdefault(name, PodSeen())
        ready, restarts, waiting = _container_states(pod)
        seen.ready_once = seen.ready_once or ready
        seen.ready, seen.restarts, seen.waiting = ready, restarts, waiting
        seen.deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))

    def failing(self) -> list[str]:
        """The pods that took traffic and then failed, each with what it did."""
        found = []
        for name, seen in sorted(self.pods.items()):
            if seen.deleting:
                continue
            what = []
            # The release's pods are new: every restart of theirs happened in this release.
            if seen.restarts:
                what.append(f"restarted {seen.restarts}x")
            if seen.waiting == "CrashLoopBackOff":
                what.append("CrashLoopBackOff")
            elif seen.ready_once and not seen.ready:
                what.append("not ready since it took traffic")
            if what:
                found.append(f"{name} ({', '.join(what)})")
        return found

    async def _run(self) -> None:
        selector = f"pod-template-hash={self.template_hash}"
        while True:
            stream = watch.Watch()
            try:
                async for event in stream.stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=selector,
                    timeout_seconds=WATCH_SECONDS,
                ):
                    self.saw(event["type"], event["raw_object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a watch that broke is opened again
                log.warning("watch of %s pods broke (%s); watching again", selector, exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-pods-{self.template_hash}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ReleaseWatch:
    """The watch of the current release's pods, moved to the new ReplicaSet when the
    Deployment's current one changes (a release during the guard's watch)."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self.current: ReleasePods | None = None

    async def follow(self, template_hash: str | None) -> None:
        if self.current is not None and self.current.template_hash == template_hash:
            return
        await self.stop()
        if template_hash:
            self.current = ReleasePods(self.core, self.namespace, template_hash)
            self.current.start()

    def failing(self) -> list[str]:
        return self.current.failing() if self.current is not None else []

    async def stop(self) -> None:
        if self.current is not None:
            await self.current.stop()
            self.current = None
