"""Reading a service's logs the way the runbook's forward fix does:
`kubectl logs -l app=... --tail=200`, every pod of the Deployment, the app's
container. A pod whose log cannot be read is named, not fatal: the others
still tell the story."""

from __future__ import annotations

from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity

from runbook.forward_fix_models import ServiceLogs, ServiceLogsRequest
from runbook.log_groups import LogLine

from .errors import permanent, raise_for_api_error
from .kubernetes import KubernetesActivities, _reason_of, selector_string


class PodLogActivities(KubernetesActivities):
    @activity.defn(name="k8s.service_logs")
    async def service_logs(self, request: ServiceLogsRequest) -> ServiceLogs:
        deployment = await self._deployment(request.namespace, request.deployment)
        containers = deployment["spec"]["template"]["spec"]["containers"]
        container = request.container or containers[0]["name"]
        if container not in {c["name"] for c in containers}:
            raise permanent(
                f"deployment/{request.deployment} has no container {container!r} "
                f"(it has {', '.join(c['name'] for c in containers)})",
                "ContainerNotFound",
            )
        try:
            pods = await self.core.list_namespaced_pod(
                request.namespace, label_selector=selector_string(deployment["spec"]["selector"])
            )
        except ApiException as exc:
            raise_for_api_error(exc, f"listing the pods of deployment/{request.deployment}")
        names = sorted(p.metadata.name for p in pods.items)
        lines: list[LogLine] = []
        unreadable: list[str] = []
        for pod in names:
            try:
                text = await self.core.read_namespaced_pod_log(
                    pod, request.namespace, container=container, tail_lines=request.tail
                )
            except ApiException as exc:
                if exc.status in (429,) or exc.status >= 500:
                    raise_for_api_error(
                        exc, f"reading the log of pod/{pod}"
                    )  # transient: the activity is retried
                unreadable.append(f"pod/{pod}: {_reason_of(exc)}")
                continue
            lines += [
                LogLine(pod=pod, container=container, text=line)
                for line in (text or "").splitlines()[-request.tail :]
            ]
            activity.heartbeat(pod)
        return ServiceLogs(pods=names, lines=lines, unreadable=unreadable)
