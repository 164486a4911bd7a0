"""`modoru up --encrypt-histories`: a key of its own in the state dir (0600,
kept across runs) unless the caller gives keys, the worker on it, the Web UI
pointed at the codec server; a bad given key stops the stack in one line."""

from __future__ import annotations

import base64
import stat

import pytest

from starter.embedded import EmbeddedStack, StackError
from worker.codec import parse_keys


@pytest.fixture(autouse=True)
def no_keys_in_env(monkeypatch) -> None:
    monkeypatch.delenv("MODORU_CODEC_KEYS", raising=False)
    monkeypatch.delenv("MODORU_CODEC_KEYS_FILE", raising=False)
    monkeypatch.chdir("/")  # no .env file around


def test_a_generated_key_is_private_and_kept_across_runs(tmp_path) -> None:
    stack = EmbeddedStack(state_dir=tmp_path, encrypt=True)
    stack._prepare_keys()
    keys_file = tmp_path / "codec-keys"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    first = keys_file.read_text()
    [(key_id, key)] = parse_keys(first, "x")
    assert key_id == "k1" and len(key) == 32
    EmbeddedStack(state_dir=tmp_path, encrypt=True)._prepare_keys()
    assert keys_file.read_text() == first
    assert stack.worker_env()["MODORU_CODEC_KEYS_FILE"] == str(keys_file)
    token_file = tmp_path / "codec-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    argv = stack.temporal_argv()
    # The UI calls ENDPOINT/decode and sends no header over http: the token is the first segment.
    assert argv[argv.index("--ui-codec-endpoint") + 1] == f"{stack.codec_endpoint}/{token}"
    EmbeddedStack(state_dir=tmp_path, encrypt=True)._prepare_keys()
    assert token_file.read_text().strip() == token


def test_off_by_default(tmp_path) -> None:
    stack = EmbeddedStack(state_dir=tmp_path)
    assert (
        "MODORU_CODEC_KEYS_FILE" not in stack.worker_env()
        and "--ui-codec-endpoint" not in stack.temporal_argv()
    )


def test_keys_given_by_the_caller_are_used_and_checked(tmp_path, monkeypatch) -> None:
    good = f"k9:{base64.b64encode(bytes(32)).decode()}"
    monkeypatch.setenv("MODORU_CODEC_KEYS", good)
    stack = EmbeddedStack(state_dir=tmp_path, encrypt=True)
    stack._prepare_keys()
    assert not (tmp_path / "codec-keys").exists()
    assert (
        stack.worker_env()["MODORU_CODEC_KEYS"] == good
        and "MODORU_CODEC_KEYS_FILE" not in stack.worker_env()
    )
    short = base64.b64encode(bytes(8)).decode()
    monkeypatch.setenv("MODORU_CODEC_KEYS", f"k9:{short}")
    with pytest.raises(StackError) as info:
        stack._prepare_keys()
    assert str(info.value).startswith(
        "MODORU_CODEC_KEYS: key 'k9' is 8 bytes"
    ) and short not in str(info.value)
