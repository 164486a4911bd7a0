"""Stock kubectl against the sandbox: the runbook's commands, as an SRE types them."""

from __future__ import annotations

import pytest

from tests.conformance.conftest import minor_version
from tests.conftest import RunningSandbox

pytestmark = pytest.mark.conformance
DEPLOY = "deployment/tekutoko-api"
IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"


def current_image(sandbox: RunningSandbox) -> str:
    return sandbox.kubectl(
        "get", DEPLOY, "-n", "default", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    ).stdout


def test_rollout_history_prints_the_upstream_table(sandbox: RunningSandbox) -> None:
    out = sandbox.kubectl("rollout", "history", DEPLOY, "-n", "default").stdout
    assert out == (
        "deployment.apps/tekutoko-api \n"
        "REVISION  CHANGE-CAUSE\n"
        "1         <none>\n"
        "2         Update to version 1.2.0\n"
        "3         Update to version 1.3.0\n"
        "\n"
    )


def test_history_of_one_revision_shows_its_image(sandbox: RunningSandbox) -> None:
    out = sandbox.kubectl("rollout", "history", DEPLOY, "-n", "default", "--revision=2").stdout
    assert out.startswith("deployment.apps/tekutoko-api with revision #2\nPod Template:")
    assert f"Image:\t{IMAGE}:1.2.0" in out
    assert "pod-template-hash=" in out


def test_undo_to_revision_two_rolls_out_and_renumbers_history(sandbox: RunningSandbox) -> None:
    out = sandbox.kubectl("rollout", "undo", DEPLOY, "-n", "default", "--to-revision=2").stdout
    assert out.strip() == "deployment.apps/tekutoko-api rolled back"
    status = sandbox.kubectl("rollout", "status", DEPLOY, "-n", "default", "--timeout=60s")
    assert 'deployment "tekutoko-api" successfully rolled out' in status.stdout
    history = sandbox.kubectl("rollout", "history", DEPLOY, "-n", "default").stdout.splitlines()
    assert history[2:5] == [
        "1         <none>",
        "3         Update to version 1.3.0",
        "4         Update to version 1.2.0",
    ]
    revision4 = sandbox.kubectl(
        "rollout", "history", DEPLOY, "-n", "default", "--revision=4"
    ).stdout
    assert f"Image:\t{IMAGE}:1.2.0" in revision4
    assert current_image(sandbox) == f"{IMAGE}:1.2.0"
    rs = sandbox.kubectl(
        "get",
        "rs",
        "-n",
        "default",
        "-o",
        "jsonpath={range "
        ".items[*]}{.metadata.annotations.deployment\\.kubernetes\\.io/revision}={.metadata.annotations.deployment\\.kubernetes\\.io/revision-history};{end}",
    ).stdout
    assert "4=2" in rs.split(";")


def test_plain_undo_goes_to_the_previous_revision(sandbox: RunningSandbox) -> None:
    sandbox.kubectl("rollout", "undo", DEPLOY, "-n", "default")
    sandbox.kubectl("rollout", "status", DEPLOY, "-n", "default", "--timeout=60s")
    assert current_image(sandbox) == f"{IMAGE}:1.2.0"


def test_undo_to_a_revision_not_in_history_fails_like_upstream(sandbox: RunningSandbox) -> None:
    result = sandbox.kubectl(
        "rollout", "undo", DEPLOY, "-n", "default", "--to-revision=9", check=False
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unable to find specified revision 9 in history"
    assert current_image(sandbox) == f"{IMAGE}:1.3.0"


def test_undo_to_the_live_revision_is_skipped(sandbox: RunningSandbox) -> None:
    out = sandbox.kubectl("rollout", "undo", DEPLOY, "-n", "default", "--to-revision=3").stdout
    assert "skipped rollback (current template already matches revision 3)" in out


def test_a_paused_deployment_refuses_undo(sandbox: RunningSandbox) -> None:
    assert "paused" in sandbox.kubectl("rollout", "pause", DEPLOY, "-n", "default").stdout
    result = sandbox.kubectl("rollout", "undo", DEPLOY, "-n", "default", check=False)
    assert result.returncode == 1
    assert (
        "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' "
        "and try again" in result.stderr
    )
    assert current_image(sandbox) == f"{IMAGE}:1.3.0"
    sandbox.kubectl("rollout", "resume", DEPLOY, "-n", "default")
    sandbox.kubectl("rollout", "undo", DEPLOY, "-n", "default")


def test_rollout_restart_makes_a_new_revision(sandbox: RunningSandbox) -> None:
    assert "restarted" in sandbox.kubectl("rollout", "restart", DEPLOY, "-n", "default").stdout
    sandbox.kubectl("rollout", "status", DEPLOY, "-n", "default", "--timeout=60s")
    history = sandbox.kubectl("rollout", "history", DEPLOY, "-n", "default").stdout.splitlines()
    assert history[-2].startswith("4 ")
    annotations = sandbox.kubectl(
        "get", DEPLOY, "-o", "jsonpath={.spec.template.metadata.annotations}"
    ).stdout
    assert "kubectl.kubernetes.io/restartedAt" in annotations


def test_get_pods_by_label_lists_three_running_pods(sandbox: RunningSandbox) -> None:
    out = sandbox.kubectl(
        "get", "pods", "-l", "app=tekutoko-api", "-n", "default"
    ).stdout.splitlines()
    # The app and its Cloud SQL Auth Proxy sidecar: kubectl counts a started native sidecar.
    assert out[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert len(out) == 4
    assert all(line.split()[1:3] == ["2/2", "Running"] for line in out[1:])
    assert (
        sandbox.kubectl("get", "pods", "-l", "app=nobody", "-n", "default").stderr.strip()
        == "No resources found in default namespace."
    )


def test_get_events_and_logs(sandbox: RunningSandbox) -> None:
    events = sandbox.kubectl("get", "events", "-n", "default").stdout
    assert "ScalingReplicaSet" in events and "Scaled up replica set" in events
    assert "Pulled" in events and "Started" in events
    logs = sandbox.kubectl("logs", "-l", "app=tekutoko-api", "-n", "default", "--tail=50").stdout
    assert 'msg="listening"' in logs


def test_describe_deployment_shows_replicasets_and_events(sandbox: RunningSandbox) -> None:
    out = sandbox.kubectl("describe", DEPLOY, "-n", "default").stdout
    assert (
        "Replicas:               3 desired | 3 updated | 3 total | 3 available | 0 unavailable"
        in out
    )
    assert "NewReplicaSet:" in out and "(3/3 replicas created)" in out
    assert "ScalingReplicaSet" in out
    assert "Progressing    True    NewReplicaSetAvailable" in out


def test_delete_an_old_replicaset(sandbox: RunningSandbox) -> None:
    names = sandbox.kubectl(
        "get",
        "rs",
        "-n",
        "default",
        "-o",
        "jsonpath={range .items[?(@.spec.replicas==0)]}{.metadata.name} {end}",
    ).stdout.split()
    assert len(names) == 2
    out = sandbox.kubectl("delete", "replicaset", names[0], "-n", "default").stdout
    # newer kubectl names the namespace
    assert out.strip() in (
        f'replicaset.apps "{names[0]}" deleted',
        f'replicaset.apps "{names[0]}" deleted from default namespace',
    )
    left = sandbox.kubectl("get", "rs", "-n", "default", "-o", "name").stdout.split()
    assert f"replicaset.apps/{names[0]}" not in left and len(left) == 2


def test_an_image_that_never_pulls_exceeds_the_progress_deadline(sandbox: RunningSandbox) -> None:
    sandbox.kubectl(
        "patch", DEPLOY, "-n", "default", "-p", '{"spec":{"progressDeadlineSeconds":20}}'
    )
    sandbox.kubectl("set", "image", DEPLOY, "-n", "default", f"api={IMAGE}:1.4.0-missing")
    result = sandbox.kubectl(
        "rollout", "status", DEPLOY, "-n", "default", "--timeout=60s", check=False
    )
    assert result.returncode == 1
    assert 'error: deployment "tekutoko-api" exceeded its progress deadline' in result.stderr
    pods = sandbox.kubectl("get", "pods", "-n", "default").stdout
    assert "ErrImagePull" in pods or "ImagePullBackOff" in pods
    events = sandbox.kubectl("get", "events", "-n", "default").stdout
    assert "Failed to pull image" in events


def test_rollout_status_lists_by_watch_as_its_client_go_does(
    sandbox: RunningSandbox, kubectl_binary: str
) -> None:
    """client-go 1.35+ lists by streaming watch and waits for the initial-events-end
    bookmark; older kubectl lists, then watches from the list's version."""
    mark = sandbox.mark()
    status = sandbox.kubectl(
        "rollout", "status", DEPLOY, "-n", "default", "--timeout=30s", timeout=40
    )
    assert 'deployment "tekutoko-api" successfully rolled out' in status.stdout
    watches = [
        e
        for e in sandbox.requests_since(mark)
        if e["resource"] == "deployments" and e["verb"] == "watch"
    ]
    assert watches and all(e["status"] == 200 for e in watches)
    watch_list = [e for e in watches if "sendInitialEvents=true" in e["query"]]
    if minor_version(kubectl_binary) >= 35:
        assert watch_list and all("allowWatchBookmarks=true" in e["query"] for e in watch_list)
    else:
        assert watch_list == []
