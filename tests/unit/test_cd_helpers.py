"""The pure parts of methods 2 and 3: kubectl apply's three-way merge, what a
restore strips from a backup, how a dispatched run is recognised, the GitHub
token's source, backup zips, image references, and the CLI's refusals of bad
arguments (one line, nothing started)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest
import yaml
from temporalio.exceptions import ApplicationError

from activities.artifact_registry import rfc3339
from activities.github import _names_tag, manifest_from_zip, read_token
from activities.kubernetes_ops import _digest, desired_manifest, three_way
from runbook.cd_models import image_tag, valid_tag


def test_three_way_sets_what_the_manifest_says_deletes_what_it_dropped_and_keeps_the_rest() -> None:
    last = {
        "replicas": 3,
        "paused": False,
        "template": {
            "spec": {"containers": [{"name": "api", "image": "a:1"}], "nodeSelector": {"pool": "x"}}
        },
    }
    desired = {
        "replicas": 3,
        "template": {"spec": {"containers": [{"name": "api", "image": "a:0"}]}},
    }
    live = {
        "replicas": 5,
        "paused": False,
        "progressDeadlineSeconds": 600,
        "template": {
            "spec": {
                "containers": [{"name": "api", "image": "a:1"}, {"name": "debug", "image": "b"}],
                "nodeSelector": {"pool": "x"},
                "dnsPolicy": "ClusterFirst",
            }
        },
    }
    merged = three_way(last, desired, live)
    assert (
        merged["replicas"] == 3
        and "paused" not in merged
        and merged["progressDeadlineSeconds"] == 600
    )  # others' fields stay
    assert merged["template"]["spec"] == {
        "containers": [{"name": "api", "image": "a:0"}],
        "dnsPolicy": "ClusterFirst",
    }  # lists whole, dropped keys gone
    assert three_way(None, desired, live)["template"]["spec"]["nodeSelector"] == {
        "pool": "x"
    }  # no last-applied: nothing is deleted


def test_a_backup_loses_status_and_what_the_server_set() -> None:
    backup = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "status": {"replicas": 3},
        "metadata": {
            "name": "api",
            "uid": "u",
            "resourceVersion": "9",
            "generation": 4,
            "creationTimestamp": "t",
            "managedFields": [],
            "annotations": {"deployment.kubernetes.io/revision": "2", "team": "walks"},
        },
    }
    clean = desired_manifest(backup)
    assert clean == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "annotations": {"team": "walks"}},
    }
    assert backup["metadata"]["uid"] == "u"  # the original is left alone


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("CD - Production (tag=1.2.0)", True),
        ("Deploy 1.2.0 to production", True),
        ("CD - Production (tag=1.2.0-rc1)", False),
        ("CD - Production", False),
    ],
)
def test_a_run_is_taken_as_the_dispatch_of_a_tag_only_when_its_title_names_it(
    title: str, expected: bool
) -> None:
    assert _names_tag(title, "tag", "1.2.0") is expected


def test_the_token_comes_from_the_named_variable_or_its_file_and_is_never_guessed(tmp_path) -> None:
    assert read_token("GH", {"GH": " ghp_1 \n"}) == "ghp_1"
    (tmp_path / "t").write_text("ghp_2\n")
    assert read_token("GH", {"GH_FILE": str(tmp_path / "t")}) == "ghp_2"
    with pytest.raises(ApplicationError) as missing:
        read_token("GH", {})
    assert missing.value.non_retryable and "set GH (or GH_FILE)" in missing.value.message


def test_a_backup_zip_must_hold_one_manifest() -> None:
    def zipped(*names: str) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name in names:
                archive.writestr(name, "kind: Deployment\n")
        return buffer.getvalue()

    assert manifest_from_zip(zipped("deployment-backup-1.yaml"), "b") == "kind: Deployment\n"
    for data in (zipped(), zipped("a.yaml", "b.yml"), b"not a zip"):
        with pytest.raises(ApplicationError):
            manifest_from_zip(data, "b")


def test_image_references_and_tags() -> None:
    assert image_tag("asia-northeast1-docker.pkg.dev/p/r/api:1.2.0") == (
        "asia-northeast1-docker.pkg.dev/p/r/api",
        "1.2.0",
    )
    assert image_tag("localhost:5000/api") == ("localhost:5000/api", "")
    assert image_tag("r/api@sha256:ab") == ("r/api", "")
    assert (
        valid_tag("1.2.0")
        and valid_tag("abc1234")
        and not valid_tag("-x")
        and not valid_tag("a b")
        and not valid_tag("x" * 129)
    )
    assert rfc3339("2026-11-28T05:00:00.123456789Z").microsecond == 123456


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            [
                "redeploy",
                "start",
                "--deployment",
                "tekutoko-api",
                "--tag",
                "bad tag",
                "--reason",
                "x",
            ],
            "--tag: 'bad tag' is not an image tag",
        ),
        (
            ["redeploy", "start", "--deployment", "Bad_Name", "--tag", "1.2.0", "--reason", "x"],
            "--deployment",
        ),
        (
            ["restore", "start", "--deployment", "tekutoko-api", "--reason", "x"],
            "give exactly one of --artifact NAME, --backup CONFIGMAP and --file PATH",
        ),
        (
            [
                "restore",
                "start",
                "--deployment",
                "tekutoko-api",
                "--reason",
                "x",
                "--artifact",
                "a",
                "--file",
                "b",
            ],
            "give exactly one of",
        ),
        (
            [
                "restore",
                "start",
                "--deployment",
                "tekutoko-api",
                "--reason",
                "x",
                "--file",
                "/nonexistent.yaml",
            ],
            "--file: /nonexistent.yaml is not a file",
        ),
        (
            [
                "troubleshoot",
                "delete-replicaset",
                "--deployment",
                "tekutoko-api",
                "--replicaset",
                "Bad_Name",
                "--reason",
                "x",
            ],
            "--replicaset",
        ),
        (
            ["redeploy", "start", "--deployment", "tekutoko-api", "--reason", "x"],
            "Missing option '--tag'",
        ),
        (
            [
                "redeploy",
                "start",
                "--deployment",
                "tekutoko-api",
                "--tag",
                "1.2.0",
                "--reason",
                "x",
                "--severity",
                "urgent",
            ],
            "'urgent' is not one of",
        ),
        (
            [
                "redeploy",
                "start",
                "--deployment",
                "tekutoko-api",
                "--tag",
                "1.2.0",
                "--reason",
                "x",
                "--language",
                "fr",
            ],
            "--language",
        ),
        (
            [
                "redeploy",
                "start",
                "--deployment",
                "tekutoko-api",
                "--tag",
                "1.2.0",
                "--reason",
                "x",
                "--detected-at",
                "yesterday",
            ],
            "--detected-at",
        ),
        (
            ["redeploy", "start", "--deployment", "tekutoko-api", "--tag", "1.2.0", "--reason", ""],
            "--reason",
        ),
        (
            [
                "restore",
                "start",
                "--deployment",
                "tekutoko-api",
                "--reason",
                "x",
                "--backup",
                "b",
                "extra",
            ],
            "unexpected extra argument",
        ),
        (
            ["troubleshoot", "delete-replicaset", "--deployment", "tekutoko-api", "--reason", "x"],
            "Missing option '--replicaset'",
        ),
        (
            [
                "troubleshoot",
                "restart",
                "--deployment",
                "tekutoko-api",
                "--reason",
                "x",
                "--replicaset",
                "a",
            ],
            "No such option: --replicaset",
        ),
        (["troubleshoot", "scale", "--deployment", "tekutoko-api"], "No such command 'scale'"),
    ],
)
def test_bad_arguments_are_one_line_and_start_nothing(
    args: list[str], said: str, monkeypatch, capsys
) -> None:
    import starter.base as base
    import starter.cli as cli

    def refuse(*_args, **_kwargs):
        raise AssertionError("a bad command line reached the server")

    # Every command reaches Temporal through starter/base.py's run: a refusal comes before it.
    monkeypatch.setattr(base, "run", refuse)
    monkeypatch.setattr(cli, "run", refuse)
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        exited.value.code == 2
        and len(lines) == 1
        and lines[0].startswith("modoru: ")
        and said in lines[0]
    ), lines


async def test_the_changing_activities_refuse_without_the_signed_approval_of_their_plan() -> None:
    from kubernetes.aio import client as kube

    from activities.gatekeeper import Gatekeeper
    from activities.github import GitHubActivities
    from activities.kubernetes_ops import KubernetesOpsActivities
    from runbook.catalog import Catalog, ServiceEntry
    from runbook.cd_config import CdConfig
    from runbook.cd_models import DispatchRequest
    from runbook.decisions import Grant
    from runbook.identity import Identity
    from runbook.repair_models import ReplicaSetDelete, RestartRequest, RestoreApplyRequest
    from runbook.signatures import new_private_key, public_key_line

    cd = CdConfig(repository="tekutoko/tekutoko-api")
    entry = ServiceEntry(
        name="tekutoko-api", deployment="tekutoko-api", service="tekutoko-api", cd=cd
    )
    identity = Identity(
        id="sre-lead",
        display_name="SRE lead",
        roles=["sre-lead"],
        keys=[public_key_line(new_private_key())],
    )
    gatekeeper = Gatekeeper(Catalog(services=[entry], identities=[identity]), b"k" * 32)
    github = GitHubActivities(
        "http://127.0.0.1:1", environ={}, gatekeeper=gatekeeper
    )  # no token: a refusal must come first
    api = kube.ApiClient()
    ops = KubernetesOpsActivities(kube.AppsV1Api(api), kube.CoreV1Api(api), gatekeeper)
    now = dt.datetime.now(dt.UTC)
    other = Grant(
        gate="approval",
        plan={
            "repository": cd.repository,
            "workflow": cd.workflow,
            "ref": "main",
            "tag": "1.1.0",
            "deployment_uid": "other",
            "replicaset": "rs-x",
            "restarted_at": "2026-11-29T00:00:00Z",
            "namespace": "default",
            "deployment": "tekutoko-api",
            "manifest_sha256": "0" * 64,
        },
    )
    cases = [
        (
            github.dispatch(DispatchRequest(cd=cd, tag="1.2.0", not_before=now)),
            "no signed approval",
        ),
        (
            github.dispatch(DispatchRequest(cd=cd, tag="1.2.0", not_before=now, grant=other)),
            "differs in tag",
        ),
        (
            ops.delete_replicaset(
                ReplicaSetDelete(
                    namespace="default",
                    deployment="tekutoko-api",
                    deployment_uid="uid-1",
                    replicaset="rs-x",
                    grant=other,
                )
            ),
            "differs in deployment_uid",
        ),
        (
            ops.rollout_restart(
                RestartRequest(
                    namespace="default",
                    deployment="tekutoko-api",
                    deployment_uid="uid-1",
                    restarted_at="2026-11-29T00:00:00Z",
                )
            ),
            "no signed approval",
        ),
    ]
    desired = "kind: Deployment\n"

    cases.append(
        (
            ops.restore_apply(
                RestoreApplyRequest(
                    namespace="default",
                    deployment="tekutoko-api",
                    deployment_uid="uid-1",
                    desired=desired,
                    digest=_digest(yaml.safe_load(desired)),
                    grant=other,
                )
            ),
            "differs in deployment_uid",
        )
    )
    for call, said in cases:
        with pytest.raises(ApplicationError) as refused:
            await call
        assert refused.value.non_retryable and said in refused.value.message, refused.value.message
    await api.close()
