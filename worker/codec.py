"""Encrypted payloads: an AES-256-GCM payload codec, Temporal's documented
encryption pattern. Off unless keys are configured.

Keys come from MODORU_CODEC_KEYS ("k2:<base64>,k1:<base64>", the first one is
current) or MODORU_CODEC_KEYS_FILE (the same text, commas or newlines, e.g. a
mounted Kubernetes Secret). New payloads are encrypted with the current key and
carry its id; any listed key decrypts, so a key rotates by putting a new one
first and keeping the old ones for old histories.

With keys set, a payload that is not encrypted is refused on decode, not passed
through: a start, signal or activity input that someone with Temporal access
wrote in clear did not come from a holder of the keys. Histories begun before
encryption was turned on are finished (or reset) first; `allow_plaintext=True`
is the codec's switch for such a migration, off unless a caller asks."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from .settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CodecSettingsError(ValueError):
    """A bad key setting; the message names the setting and never the key."""


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Sequence[tuple[str, bytes]], *, allow_plaintext: bool = False) -> None:
        if not keys:
            raise ValueError("an encryption codec needs at least one key")
        self.key_id = keys[0][0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}
        self.allow_plaintext = allow_plaintext

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self.key_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            # The key id is authenticated too: relabelling a payload breaks it.
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), self.key_id.encode())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                if self.allow_plaintext:
                    decoded.append(payload)  # written before encryption was on
                    continue
                encoding = payload.metadata.get("encoding", b"").decode(errors="replace")[:40]
                raise ValueError(
                    f"payload is not encrypted (encoding {encoding!r}) while encryption keys are "
                    "set: refused (it was not written by a holder of the keys)"
                )
            key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise ValueError(
                    f"payload encrypted with unknown key id {key_id!r}; known key ids: "
                    f"{', '.join(self._ciphers)}"
                )
            try:
                plain = cipher.decrypt(
                    payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode()
                )
            except InvalidTag:
                raise ValueError(
                    f"payload with key id {key_id!r} does not decrypt: tampered with, or a "
                    "different key under that id"
                ) from None
            decoded.append(Payload.FromString(plain))
        return decoded


def parse_keys(text: str, setting: str) -> list[tuple[str, bytes]]:
    """\"id:base64" entries separated by commas or newlines, current key first."""
    keys: list[tuple[str, bytes]] = []
    entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip()]
    if not entries:
        raise CodecSettingsError(
            f"{setting}: no keys given (expected id:base64-of-32-bytes, current key first)"
        )
    for number, entry in enumerate(entries, 1):
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not KEY_ID_PATTERN.match(key_id):
            raise CodecSettingsError(
                f"{setting}: entry {number} is not id:base64-of-32-bytes (an id is letters, "
                "digits, '.', '_' or '-')"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise CodecSettingsError(f"{setting}: key {key_id!r} is not valid base64") from None
        if len(key) != 32:
            raise CodecSettingsError(
                f"{setting}: key {key_id!r} is {len(key)} bytes; AES-256 needs 32 (head -c 32 "
                "/dev/urandom | base64)"
            )
        if any(key_id == known for known, _ in keys):
            raise CodecSettingsError(f"{setting}: key id {key_id!r} is listed twice")
        keys.append((key_id, key))
    return keys


def codec_from_settings(settings: Settings) -> EncryptionCodec | None:
    """The codec the settings describe, or None when encryption is off."""
    if settings.codec_keys is not None and settings.codec_keys_file is not None:
        raise CodecSettingsError(
            "MODORU_CODEC_KEYS and MODORU_CODEC_KEYS_FILE are both set; give one"
        )
    if settings.codec_keys is not None:
        return EncryptionCodec(
            parse_keys(settings.codec_keys.get_secret_value(), "MODORU_CODEC_KEYS")
        )
    if settings.codec_keys_file is not None:
        try:
            text = settings.codec_keys_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CodecSettingsError(
                f"MODORU_CODEC_KEYS_FILE: cannot read {settings.codec_keys_file} "
                f"({type(exc).__name__})"
            ) from None
        return EncryptionCodec(parse_keys(text, "MODORU_CODEC_KEYS_FILE"))
    return None


def data_converter_for(codec: PayloadCodec | None) -> DataConverter:
    """pydantic's converter, with payloads and failure messages encrypted when a codec is given."""
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def new_key_entry(key_id: str = "k1") -> str:
    """A fresh "id:base64" entry for a keys file."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"
