"""The payload codec: AES-256-GCM with key ids, rotation, refusals, and key
settings that fail with the setting named and no key material echoed."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from temporalio.api.common.v1 import Payload

from runbook.models import RollbackRequest, Severity
from worker.codec import (
    CodecSettingsError,
    EncryptionCodec,
    codec_from_settings,
    data_converter_for,
    new_key_entry,
    parse_keys,
)
from worker.settings import Settings

K1 = bytes(range(32))
K2 = bytes(range(32, 64))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def request() -> RollbackRequest:
    return RollbackRequest(
        deployment="tekutoko-api",
        severity=Severity.IMMEDIATE,
        reason="secret-reason-7391",
        requested_by="oncall",
    )


async def test_round_trip_through_the_data_converter_hides_the_plaintext() -> None:
    converter = data_converter_for(EncryptionCodec([("k1", K1)]))
    [payload] = await converter.encode([request()])
    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert payload.metadata["encryption-key-id"] == b"k1"
    assert (
        b"secret-reason-7391" not in payload.SerializeToString()
        and b"tekutoko-api" not in payload.data
    )
    [back] = await converter.decode([payload], [RollbackRequest])
    assert back == request()


async def test_each_encoding_uses_a_fresh_nonce() -> None:
    codec = EncryptionCodec([("k1", K1)])
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"same"')
    first, second = await codec.encode([plain, plain])
    assert first.data != second.data


async def test_rotation_new_payloads_use_the_first_key_and_old_ones_still_decode() -> None:
    old = EncryptionCodec([("k1", K1)])
    [written_before] = await old.encode(
        [Payload(metadata={"encoding": b"json/plain"}, data=b'"before"')]
    )
    rotated = EncryptionCodec(parse_keys(f"k2:{b64(K2)},k1:{b64(K1)}", "MODORU_CODEC_KEYS"))
    [written_after] = await rotated.encode(
        [Payload(metadata={"encoding": b"json/plain"}, data=b'"after"')]
    )
    assert written_after.metadata["encryption-key-id"] == b"k2"
    assert [p.data for p in await rotated.decode([written_before, written_after])] == [
        b'"before"',
        b'"after"',
    ]
    with pytest.raises(ValueError, match="unknown key id 'k2'"):
        await old.decode([written_after])


async def test_unencrypted_payloads_are_refused_on_decode_unless_allowed() -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"clear"')
    with pytest.raises(ValueError, match="payload is not encrypted \\(encoding 'json/plain'\\)"):
        await EncryptionCodec([("k1", K1)]).decode([plain])
    assert await EncryptionCodec([("k1", K1)], allow_plaintext=True).decode([plain]) == [plain]


async def test_tampered_ciphertext_and_relabelled_key_ids_are_refused() -> None:
    codec = EncryptionCodec([("k1", K1), ("k0", K1)])
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(ValueError, match="does not decrypt"):
        await codec.decode([tampered])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata["encryption-key-id"] = (
        b"k0"  # same key bytes, another id: the id is authenticated
    )
    with pytest.raises(ValueError, match="does not decrypt"):
        await codec.decode([relabelled])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"k1:{b64(K1[:16])}", "MODORU_CODEC_KEYS: key 'k1' is 16 bytes; AES-256 needs 32"),
        ("k1:not*base64!", "MODORU_CODEC_KEYS: key 'k1' is not valid base64"),
        (f"k1:{b64(K1)},k1:{b64(K2)}", "MODORU_CODEC_KEYS: key id 'k1' is listed twice"),
        (b64(K1), "MODORU_CODEC_KEYS: entry 1 is not id:base64"),
        (" , ", "MODORU_CODEC_KEYS: no keys given"),
    ],
)
def test_bad_keys_name_the_setting_and_never_echo_key_material(text: str, expected: str) -> None:
    with pytest.raises(CodecSettingsError) as info:
        codec_from_settings(Settings(_env_file=None, codec_keys=text))
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message
    for secret in (b64(K1), b64(K1[:16]), b64(K2), "not*base64!"):
        assert secret not in message


def test_keys_from_a_file_with_newlines_as_a_mounted_secret(tmp_path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"k2:{b64(K2)}\nk1:{b64(K1)}\n")
    codec = codec_from_settings(Settings(_env_file=None, codec_keys_file=path))
    assert codec is not None and codec.key_id == "k2" and codec.key_ids == ["k2", "k1"]
    with pytest.raises(CodecSettingsError, match="^MODORU_CODEC_KEYS_FILE: cannot read"):
        codec_from_settings(Settings(_env_file=None, codec_keys_file=tmp_path / "missing"))
    assert codec_from_settings(Settings(_env_file=None)) is None


def test_new_key_entries_parse() -> None:
    [(key_id, key)] = parse_keys(new_key_entry("k7"), "x")
    assert key_id == "k7" and len(key) == 32


def test_the_worker_refuses_a_bad_key_in_one_line_without_the_key() -> None:
    bad = b64(K1[:31])
    env = {"PATH": "/usr/bin:/bin", "MODORU_CODEC_KEYS": f"k1:{bad}"}
    done = subprocess.run(
        [sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "modoru worker: MODORU_CODEC_KEYS: key 'k1' is 31 bytes; AES-256 needs 32 (head -c 32 "
        "/dev/urandom | base64)"
    )
    assert bad not in done.stdout + done.stderr


def test_the_cli_refuses_a_duplicate_key_id_in_one_line() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "MODORU_CODEC_KEYS": f"k1:{b64(K1)},k1:{b64(K2)}",
        "MODORU_TEMPORAL_ADDRESS": "127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "starter.cli", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "modoru: MODORU_CODEC_KEYS: key id 'k1' is listed twice"
    assert b64(K1) not in done.stderr and b64(K2) not in done.stderr


async def test_failure_messages_are_encrypted_too() -> None:
    from temporalio.api.failure.v1 import Failure
    from temporalio.exceptions import ApplicationError

    converter = data_converter_for(EncryptionCodec([("k1", K1)]))
    failure = Failure()
    await converter.encode_failure(
        ApplicationError("cannot reach db-password-host-77", non_retryable=True), failure
    )
    assert "db-password-host-77" not in str(failure)
    assert failure.encoded_attributes.metadata["encoding"] == b"binary/encrypted"
    back = await converter.decode_failure(failure)
    assert str(back) == "cannot reach db-password-host-77"
