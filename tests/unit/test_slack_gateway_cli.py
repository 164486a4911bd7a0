"""`modoru slack-gateway` and `sandbox up --slack-gateway-url` refuse what they
cannot work with, in one line naming the problem, before listening anywhere."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from runbook.signatures import new_private_key
from sandbox.__main__ import parse_args
from starter.cli import app


def gateway(env: dict[str, str]):
    clean = {k: "" for k in ("MODORU_SLACK_SIGNING_SECRET", "MODORU_SLACK_BOT_TOKEN")}
    return CliRunner().invoke(app, ["slack-gateway"], env={**clean, **env})


def test_without_the_signing_secret_or_the_token_it_says_which(tmp_path) -> None:
    result = gateway({})
    assert result.exit_code == 2 and "MODORU_SLACK_SIGNING_SECRET" in result.output
    result = gateway({"MODORU_SLACK_SIGNING_SECRET": "s"})
    assert result.exit_code == 2 and "MODORU_SLACK_BOT_TOKEN" in result.output
    missing = tmp_path / "nowhere"
    result = gateway({"MODORU_SLACK_SIGNING_SECRET_FILE": str(missing)})
    assert result.exit_code == 2 and f"cannot read {missing}" in result.output


def test_its_key_must_be_an_attestor_s_in_the_catalog(tmp_path) -> None:
    secrets = {"MODORU_SLACK_SIGNING_SECRET": "s", "MODORU_SLACK_BOT_TOKEN": "xoxb-1"}
    result = gateway(secrets)
    assert result.exit_code == 2 and "MODORU_SLACK_ATTESTOR_KEY_FILE" in result.output
    key = tmp_path / "gateway.key"
    key.write_bytes(new_private_key())
    result = gateway({**secrets, "MODORU_SLACK_ATTESTOR_KEY_FILE": str(key)})
    assert result.exit_code == 2 and "is not an attestor's in the catalog" in result.output
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    result = gateway({**secrets, "MODORU_SLACK_ATTESTOR_KEY_FILE": str(garbage)})
    assert result.exit_code == 2 and "is not a usable key" in result.output


def test_the_sandbox_takes_only_an_http_gateway_url(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["up", "--slack-gateway-url", "file:///etc/passwd"])
    assert "--slack-gateway-url must be an http(s) URL" in capsys.readouterr().err
    assert parse_args(["up", "--slack-gateway-url", "http://127.0.0.1:3000/x"]).slack_gateway_url
