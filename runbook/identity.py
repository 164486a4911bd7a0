"""Who may decide: the catalog's identities (the trust root, reviewed like code).
Each has an id, a display name, roles and SSH public keys. Ids are ASCII and
compared after Unicode normalisation and case folding, so a look-alike name
(a Unicode hyphen, full-width letters) is never the same person as the real
one, and never anyone at all unless the catalog lists it."""

from __future__ import annotations

import base64
import re
import unicodedata

from pydantic import BaseModel, ConfigDict, Field, field_validator

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
KEY_TYPES = ("ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ssh-rsa", "ecdsa-sha2-nistp256")
_ID = re.compile(ID_PATTERN)


def normalize_id(text: str) -> str:
    """The form ids are compared in: NFKC, case-folded, trimmed."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


def key_identity(line: str) -> str:
    """'TYPE BASE64' of an OpenSSH public key line (the comment dropped), or ValueError."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise ValueError(
            f"not an OpenSSH public key of a supported type ({', '.join(KEY_TYPES)}): {line[:40]!r}"
        )
    try:
        base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ValueError(f"the key's base64 is damaged: {line[:40]!r}") from None
    if parts[0] == "ssh-rsa" and len(parts[1]) < 500:
        raise ValueError("RSA keys shorter than 3072 bits are refused; use ssh-ed25519")
    return f"{parts[0]} {parts[1]}"


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str = Field(description="lowercase ASCII, e.g. sre-lead.tanaka")
    display_name: str = Field(min_length=1, max_length=200)
    roles: list[str] = Field(default_factory=list, description="e.g. [sre-lead, oncall]")
    keys: list[str] = Field(min_length=1, description="OpenSSH public keys (ssh-ed25519 preferred)")

    @field_validator("id")
    @classmethod
    def _ascii_id(cls, value: str) -> str:
        normal = normalize_id(value)
        if not _ID.match(normal):
            raise ValueError(
                f"identity id {value!r} must be lowercase ASCII letters, digits, '.', '_' or '-'"
            )
        return normal

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        return [normalize_id(role) for role in value]

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        return [key_identity(line) for line in value]


def check_identities(identities: list[Identity]) -> None:
    """ValueError for duplicate ids or a key listed under two ids."""
    seen: dict[str, str] = {}
    owners: dict[str, str] = {}
    for identity in identities:
        if identity.id in seen:
            raise ValueError(f"identity {identity.id!r} is listed twice")
        seen[identity.id] = identity.id
        for key in identity.keys:
            if key in owners and owners[key] != identity.id:
                raise ValueError(
                    f"one key is listed under two identities ({owners[key]!r} and "
                    f"{identity.id!r}): each person signs with their own key"
                )
            owners[key] = identity.id
