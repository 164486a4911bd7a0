"""SSH signatures (the `ssh-keygen -Y sign` format, namespace `modoru`) over
decision payloads: checked with the maintained `sshsig` library, made with
`cryptography` from an OpenSSH private key. Pure computation, no I/O: the
workflows check signatures deterministically, and the activities that change
things check them again."""

from __future__ import annotations

import hashlib
import struct

import sshsig
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

NAMESPACE = "modoru"


class BadSignature(ValueError):
    pass


def signer_key(payload: str, armored: str) -> str:
    """The 'TYPE BASE64' public key that made `armored` over `payload`, or BadSignature."""
    try:
        key = sshsig.check_signature(payload.encode("utf-8"), armored, namespace=NAMESPACE)
    except (
        sshsig.InvalidSignature,
        ValueError,
        RuntimeError,
    ) as exc:  # RuntimeError: a key type sshsig does not support
        raise BadSignature(f"the signature does not verify: {exc}") from None
    kind, blob = key.openssh_str().split()[:2]
    return f"{kind} {blob}"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def sign(payload: str, private_key: bytes, passphrase: bytes | None = None) -> str:
    """An armored SSH signature of `payload` with an OpenSSH ed25519 private key,
    byte for byte what `ssh-keygen -Y sign -n modoru` makes."""
    key = serialization.load_ssh_private_key(private_key, password=passphrase)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("modoru signs with ed25519 keys only; make one with ssh-keygen -t ed25519")
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    public_blob = _string(b"ssh-ed25519") + _string(public)
    digest = hashlib.sha512(payload.encode("utf-8")).digest()
    signed = (
        b"SSHSIG"
        + _string(NAMESPACE.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(digest)
    )
    signature = _string(b"ssh-ed25519") + _string(key.sign(signed))
    raw = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(public_blob)
        + _string(NAMESPACE.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(signature)
    )
    return sshsig.sshsig.ssh_enarmor_sshsig(raw)


def public_key_line(private_key: bytes, passphrase: bytes | None = None) -> str:
    key = serialization.load_ssh_private_key(private_key, password=passphrase)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def new_private_key() -> bytes:
    """A fresh ed25519 key in OpenSSH format (the demo's identities)."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


__all__ = ["NAMESPACE", "BadSignature", "new_private_key", "public_key_line", "sign", "signer_key"]
