"""Issue 24's periphery, attacked from outside and refused: a notice asked to
write outside the notices directory, the codec server asked to decrypt without
a token or from another origin, a restore file with a Secret or YAML aliases,
a check query that acts, a check whose rows would land in the history, and a
requester whose name hides a zero-width space."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

import starter.base as base
import starter.cli as cli
import starter.start_options as start_options
import worker.codec_server as codec_server
from activities.database import DatabaseActivities, QueryFailed
from activities.notify import NotifyActivities
from runbook.catalog import Catalog, Channel, DatabaseAccess, ServiceEntry
from runbook.identity import Identity, holds_role, normalize_id
from runbook.models import Notice
from runbook.pitr_models import CloneQueriesRequest, ExpectedQuery
from runbook.queries import one_reading_statement
from starter.embedded import EmbeddedStack, private_dir
from starter.identities import demo_identities
from worker.codec import EncryptionCodec, data_converter_for
from worker.codec_server import build_app, new_token

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPW2sYyYzVX5eE1b3w1n0jXWm1F2O3M3k2l2p8cX4tW1"


def catalog_with(*channels: Channel) -> Catalog:
    return Catalog(
        services=[
            ServiceEntry(name="api", deployment="api", service="api", channels=list(channels))
        ]
    )


# 1. notify.send: channels and files from the worker's catalog, inside the notices directory.


@pytest.mark.parametrize(
    "path",
    ["../../escaped.jsonl", "../escaped.jsonl", "{outside}/escaped.jsonl", "link/escaped.jsonl"],
)
async def test_a_notice_cannot_write_outside_the_notices_directory(tmp_path, path) -> None:
    notices, outside = tmp_path / "a" / "notices", tmp_path / "outside"
    notices.mkdir(parents=True)
    outside.mkdir()
    (notices / "link").symlink_to(outside)
    channel = Channel(kind="jsonl", path=path.format(outside=outside))
    notify = NotifyActivities(environ={}, base_dir=notices)
    notice = Notice(kind="start", subject="s", text="pwned", channels=[channel])
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(notify.send, notice)
    assert info.value.non_retryable and info.value.type == "NoticeChannelRefused"
    assert "outside the notices directory" in str(info.value)
    assert not list(tmp_path.rglob("escaped.jsonl"))


async def test_a_notice_may_use_only_the_catalog_s_channels(tmp_path) -> None:
    listed = Channel(kind="jsonl", path="notices.jsonl")
    notify = NotifyActivities(
        environ={"TEMPORAL_API_KEY": "http://127.0.0.1:1/x"},
        base_dir=tmp_path,
        catalog=catalog_with(listed, Channel(kind="console")),
    )
    for rogue in (
        Channel(kind="jsonl", path="other.jsonl"),
        Channel(kind="slack", webhook_env="TEMPORAL_API_KEY"),  # a URL of the caller's choosing
    ):
        with pytest.raises(ApplicationError, match="not one of the catalog's channels") as info:
            await ActivityEnvironment().run(
                notify.send, Notice(kind="start", subject="s", text="t", channels=[listed, rogue])
            )
        assert info.value.non_retryable
    assert not (tmp_path / "notices.jsonl").exists() and not (tmp_path / "other.jsonl").exists()
    done = await ActivityEnvironment().run(
        notify.send, Notice(kind="start", subject="s", text="t", channels=[listed])
    )
    assert done.delivered == ["jsonl:notices.jsonl"]
    assert json.loads((tmp_path / "notices.jsonl").read_text())["text"] == "t"


# 4. Data checks: a verdict, never data; queries that act are refused.


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        'SELECT "pg_cancel_backend"(pid) FROM pg_stat_activity',
        "SELECT pg_catalog.pg_terminate_backend /**/ (1)",
        "SELECT dblink_exec('host=x', 'DROP TABLE walks')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT set_config('transaction_read_only', 'off', true)",
        "SELECT pg_reload_conf()",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT query_to_xml('SELECT pg_' || 'terminate_backend(1)', true, true, '')",
        'SELECT U&"pg\\005fterminate_backend"(1)',
    ],
)
def test_a_check_query_that_acts_is_refused(sql: str) -> None:
    with pytest.raises(ValueError, match="must only read"):
        one_reading_statement(sql)
    with pytest.raises(ValueError, match="must only read"):
        ExpectedQuery(name="walks", sql=sql, expect="1")


def test_reading_queries_still_pass() -> None:
    for sql in ("SELECT count(*) FROM walks", "SELECT max(created_at) FROM users WHERE id > 3"):
        assert one_reading_statement(sql) == sql


EMAILS = ["alice@example.com", "bob@example.com", "carol@example.com"]


class RowsOfUsers(DatabaseActivities):
    """The clone answers with every user's e-mail; no pod is made."""

    def __init__(self, rows: list[str]) -> None:
        self.gatekeeper = None
        self.rows = rows

    async def _check_pod(self, request) -> str:
        return "check-pod"

    async def _wait_ready(self, namespace, name, access) -> str:
        return "api"

    async def _remove_pod(self, namespace, name) -> None:
        return None

    async def _query(self, namespace, pod, container, access, sql) -> list[str]:
        if isinstance(self.rows, str):  # psql's error, quoting a value from the rows
            raise QueryFailed(self.rows)
        return self.rows


@pytest.mark.parametrize(
    ("rows", "expect", "ok"),
    [
        ([",".join(EMAILS)], "3", False),  # one row holding them all
        (EMAILS, "3", False),  # one row each
        ([",".join(EMAILS)], ",".join(EMAILS), True),
        (f'ERROR:  invalid input syntax for type integer: "{EMAILS[0]}"', "3", False),
    ],
)
async def test_a_check_s_result_holds_a_verdict_and_no_row_data(rows, expect, ok) -> None:
    request = CloneQueriesRequest(
        namespace="default",
        deployment="api",
        access=DatabaseAccess(container="api", database="d", user="u"),
        source_connection_name="p:r:db",
        clone_connection_name="p:r:db-clone",
        checks=[
            ExpectedQuery(
                name="walks", sql="SELECT string_agg(email, ',') FROM users", expect=expect
            )
        ],
    )
    [result] = await ActivityEnvironment().run(RowsOfUsers(rows).clone_queries, request)
    assert result.ok is ok
    recorded = result.model_dump_json()
    assert not any(email in recorded for email in EMAILS)
    if isinstance(rows, list):
        assert f"{len(rows)} row(s)" in result.detail and "sha256:" in result.detail
    else:
        assert "invalid input syntax for type integer" in result.detail


# 5. Names compare as a person reads them; ids and role names are separate namespaces.


def test_a_zero_width_space_does_not_make_another_person() -> None:
    for hidden in (
        "sre-lead\u200b",
        "\u200dsre-lead",
        "sre\u2060-lead",
        "\u202esre-lead",
        "sre-lead\ufeff",
    ):
        assert normalize_id(hidden) == "sre-lead"


@pytest.fixture
def started(monkeypatch) -> list[object]:
    seen: list[object] = []

    def refuse(*args, **kwargs):
        raise AssertionError("a command reached the server")

    monkeypatch.setattr(start_options, "sign_start", lambda request, wid, key: seen.append(request))
    monkeypatch.setattr(start_options, "run", lambda command: None)
    monkeypatch.setattr(base, "run", refuse)
    return seen


@pytest.mark.parametrize(
    "argv",
    [
        [
            "rollback",
            "start",
            "--deployment",
            "api",
            "--severity",
            "investigate",
            "--reason",
            "x",
            "--requested-by",
            "sre-lead\u200b",
        ],
        ["approve", "rollback-default-api", "--by", "sre-lead\u200b"],
    ],
)
def test_the_cli_refuses_a_name_with_invisible_characters(argv, started) -> None:
    done = CliRunner().invoke(cli.app, argv)
    assert done.exit_code == 2, done.output
    assert "invisible characters (U+200B)" in done.output
    assert started == []


def test_an_identity_whose_id_is_a_role_name_does_not_hold_the_role() -> None:
    impostor = Identity(id="sre-lead", display_name="not a lead", roles=["dev"], keys=[KEY])
    lead = Identity(
        id="tanaka", display_name="Tanaka", roles=["sre-lead"], keys=[KEY.replace("W1", "W2")]
    )
    people = [impostor, lead]
    assert not holds_role(people, "sre-lead", ["sre-lead"])
    assert holds_role(people, "tanaka", ["sre-lead"])
    assert holds_role(people, "sre-lead", ["id:sre-lead"])  # a person named on purpose


# 3. A restore file is checked before it reaches the history.

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
        - name: api
          image: registry.example/api:1.2.0  # known good
"""
SECRET = """\
---
apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: hunter2-secret-value
"""
LIST_WITH_SECRET = """\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Secret
    metadata: {name: db}
    data: {password: aHVudGVyMi1zZWNyZXQtdmFsdWU=}
"""
LITERAL = (
    DEPLOYMENT
    + """\
          env:
            - name: DB_PASSWORD
              value: hunter2-secret-value
"""
)
# A few hundred bytes that a YAML loader expands to 10^6 items, before anyone approved anything.
LAUGHS = 'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)
)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (DEPLOYMENT + SECRET, "holds Secret data (document 2: a Secret at the top)"),
        (DEPLOYMENT + "---\n" + DEPLOYMENT, "must hold one Deployment, it holds 2 objects"),
        (SECRET, "holds Secret data (a Secret at the top)"),
        (
            LIST_WITH_SECRET,
            "holds Secret data (a Secret at items[0])",
        ),
        (LITERAL, "a literal value for DB_PASSWORD"),
        (LAUGHS, "YAML anchors and aliases are refused"),
        (
            DEPLOYMENT.replace("name: api\nspec", "name: other\nspec"),
            "deployment/other, not deployment/api",
        ),
    ],
)
def test_a_restore_file_is_refused_before_anything_starts(
    tmp_path, text, said, started, capsys
) -> None:
    path = tmp_path / "restore.yaml"
    path.write_text(text)
    argv = ["restore", "start", "--deployment", "api", "--reason", "x", "--file", str(path)]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and started == [], err
    assert said in err and "hunter2" not in err


def test_a_good_restore_file_travels_without_its_comments(tmp_path, started) -> None:
    path = tmp_path / "restore.yaml"
    path.write_text(DEPLOYMENT)
    with pytest.raises(SystemExit) as exited:
        cli.main(["restore", "start", "--deployment", "api", "--reason", "x", "--file", str(path)])
    assert exited.value.code in (0, None)
    [request] = started
    assert "registry.example/api:1.2.0" in request.manifest and "known good" not in request.manifest


# 2. The codec server: a token and an allowed origin; /encode off; plaintext refused.

UI = "http://127.0.0.1:8233"
CODEC_KEY = bytes(range(32))


def proto_json(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


@pytest.fixture
async def codec_client() -> AsyncIterator[tuple[TestClient, str, Payload]]:
    codec = EncryptionCodec([("k1", CODEC_KEY)])
    token = new_token()
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"s3cr3t"')])
    async with TestClient(TestServer(build_app(codec, {UI}, token))) as client:
        yield client, token, sealed


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),  # no Origin, no token: the stock CLI or curl from any local process
        ({"Origin": UI}, 401),  # the UI's origin is not enough
        ({"Authorization": "Bearer wrong-token-wrong-token-wrong"}, 401),
        ({"Authorization": "Basic {token}"}, 401),
    ],
)
async def test_the_codec_server_decrypts_for_no_one_without_the_token_and_origin(
    codec_client, headers, status
) -> None:
    client, token, sealed = codec_client
    given = {k: v.format(token=token) for k, v in headers.items()}
    response = await client.post("/decode", data=proto_json(sealed), headers=given)
    assert response.status == status
    assert b"s3cr3t" not in await response.read()


async def test_the_codec_server_answers_the_token_in_a_header_or_the_path(codec_client) -> None:
    client, token, sealed = codec_client
    for path, headers in (
        ("/decode", {"Authorization": f"Bearer {token}", "Origin": UI}),
        (f"/{token}/decode", {"Origin": UI}),  # the dev server's UI: ENDPOINT/decode
    ):
        response = await client.post(path, data=proto_json(sealed), headers=headers)
        assert response.status == 200
        decoded = json_format.Parse(await response.read(), Payloads())
        assert decoded.payloads[0].data == b'"s3cr3t"'
    wrong = await client.post(f"/{token[:-1]}x/decode", data=proto_json(sealed))
    assert wrong.status == 401
    for origin in ("https://evil.example", "null"):  # the token does not open other origins
        other = await client.post(
            f"/{token}/decode", data=proto_json(sealed), headers={"Origin": origin}
        )
        assert other.status == 403 and b"s3cr3t" not in await other.read()


async def test_encode_is_off_unless_asked_for(codec_client) -> None:
    client, token, _ = codec_client
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"forged": true}')
    for path in ("/encode", f"/{token}/encode"):
        response = await client.post(
            path, data=proto_json(plain), headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 403 and "binary/encrypted" not in await response.text()


async def test_with_keys_set_a_plaintext_payload_is_refused(codec_client) -> None:
    client, token, _ = codec_client
    forged = Payload(metadata={"encoding": b"json/plain"}, data=b'{"requested_by": "oncall"}')
    response = await client.post(
        "/decode", data=proto_json(forged), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 422 and "not encrypted" in (await response.json())["error"]
    with pytest.raises(ValueError, match="not encrypted"):  # the worker's converter too
        await data_converter_for(EncryptionCodec([("k1", CODEC_KEY)])).decode([forged])


def test_the_codec_server_will_not_start_without_a_token(monkeypatch, capsys) -> None:
    monkeypatch.chdir("/")
    monkeypatch.setenv("MODORU_CODEC_KEYS", f"k1:{base64.b64encode(CODEC_KEY).decode()}")
    for name in ("MODORU_CODEC_KEYS_FILE", "MODORU_CODEC_TOKEN", "MODORU_CODEC_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(codec_server.web, "run_app", lambda *a, **k: pytest.fail("it started"))
    assert codec_server.main(["--port", "1"]) == 2
    assert "no token" in capsys.readouterr().err


def test_the_state_directory_is_private(tmp_path) -> None:
    state = tmp_path / "state"
    private_dir(state)
    # 0711 as root: the sandbox's PostgreSQL then runs as another user and passes through.
    assert stat.S_IMODE(state.stat().st_mode) == (0o711 if os.geteuid() == 0 else 0o700)
    stack = EmbeddedStack(state_dir=state)
    made = state / "made-by-a-child.db"  # as the dev server makes temporal.db
    stack._spawn("probe", [sys.executable, "-c", f"open({str(made)!r}, 'w').write('x')"])
    [(_, proc, log)] = stack.processes
    proc.wait(timeout=30)
    log.close()
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "probe.log").stat().st_mode) == 0o600
    _, keys = demo_identities(state)
    assert stat.S_IMODE((state / "identities").stat().st_mode) == 0o700
    for path in [*keys.values(), state / "identities" / "catalog.yaml"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize(
    ("text", "said"),
    [(LAUGHS, "YAML anchors and aliases are refused"), (DEPLOYMENT + SECRET, "Secret data")],
)
async def test_a_restore_check_scheduled_by_hand_refuses_what_the_cli_would(text, said) -> None:
    from types import SimpleNamespace

    from activities.kubernetes_ops import KubernetesOpsActivities
    from runbook.repair_models import RestoreCheckRequest

    # No API server: the manifest is refused before anything is read.
    apps = SimpleNamespace(api_client=SimpleNamespace(sanitize_for_serialization=None))
    k8s = KubernetesOpsActivities(apps, None, None)  # type: ignore[arg-type]
    check = await k8s.restore_check(
        RestoreCheckRequest(namespace="default", deployment="api", manifest=text)
    )
    assert len(check.problems) == 1 and said in check.problems[0], check.problems
