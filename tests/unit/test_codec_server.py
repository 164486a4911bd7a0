"""The Web UI's codec server: proto-JSON payloads in and out to callers with the
token, CORS only for the UI's origins, clear refusals."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from worker.codec import EncryptionCodec
from worker.codec_server import build_app, cors_origins, new_token
from worker.settings import Settings

UI = "http://127.0.0.1:8233"
CODEC = EncryptionCodec([("k1", bytes(32))])
TOKEN = new_token()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(CODEC, {UI}, TOKEN, allow_encode=True))) as c:
        yield c


def body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


async def test_decode_returns_what_the_worker_wrote_in_the_ui_s_json_form(
    client: TestClient,
) -> None:
    [sealed] = await CODEC.encode(
        [Payload(metadata={"encoding": b"json/plain"}, data=b'{"reason":"pods crash"}')]
    )
    response = await client.post(
        "/decode",
        data=body(sealed),
        headers={
            "Content-Type": "application/json",
            "Origin": UI,
            "X-Namespace": "default",
            **AUTH,
        },
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == UI
    answer = await response.json()
    [payload] = answer["payloads"]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(payload["data"])) == {"reason": "pods crash"}


async def test_encode_then_decode_round_trips(client: TestClient) -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')
    encoded = await (
        await client.post(
            "/encode", data=body(plain), headers={"Content-Type": "application/json", **AUTH}
        )
    ).text()
    assert (
        base64.b64decode(json.loads(encoded)["payloads"][0]["metadata"]["encoding"])
        == b"binary/encrypted"
    )
    decoded = json_format.Parse(
        await (await client.post(f"/{TOKEN}/decode", data=encoded)).text(), Payloads()
    )
    assert list(decoded.payloads) == [plain]


async def test_cors_preflight_answers_the_ui_and_no_one_else(client: TestClient) -> None:
    ok = await client.options(
        "/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
    )
    assert ok.status == 204 and ok.headers["Access-Control-Allow-Origin"] == UI
    assert "x-namespace" in ok.headers["Access-Control-Allow-Headers"]
    other = await client.options(
        "/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.status == 403 and "Access-Control-Allow-Origin" not in other.headers
    [sealed] = await CODEC.encode([Payload(data=b"secret")])
    refused = await client.post(
        "/decode", data=body(sealed), headers={"Origin": "https://evil.example", **AUTH}
    )
    assert refused.status == 403 and b"secret" not in await refused.read()


async def test_bad_bodies_and_unknown_keys_are_clear_errors(client: TestClient) -> None:
    bad = await client.post("/decode", data="not json", headers=AUTH)
    assert bad.status == 400 and "payloads" in (await bad.json())["error"]
    [foreign] = await EncryptionCodec([("k9", bytes(range(32)))]).encode([Payload(data=b"x")])
    unknown = await client.post("/decode", data=body(foreign), headers=AUTH)
    assert unknown.status == 422 and "unknown key id 'k9'" in (await unknown.json())["error"]


def test_cors_origins_default_to_the_web_ui_setting_and_drop_paths() -> None:
    assert cors_origins(Settings(_env_file=None)) == {"http://127.0.0.1:8233"}
    assert cors_origins(
        Settings(
            _env_file=None,
            codec_cors_origins="https://temporal.example.com/, http://localhost:8233",
        )
    ) == {"https://temporal.example.com", "http://localhost:8233"}
    assert cors_origins(Settings(_env_file=None), ["https://ui.example/namespaces"]) == {
        "https://ui.example"
    }
