"""Who may decide: the catalog's identities (the trust root, reviewed like code).
Each has an id, a display name, roles and SSH public keys. Ids are ASCII and
compared after Unicode normalisation and case folding, so a look-alike name
(a Unicode hyphen, full-width letters) is never the same person as the real
one, and never anyone at all unless the catalog lists it. Invisible characters
(zero-width, bidi controls) are dropped before comparing, so a name compares as
a person reads it. Ids and role names are separate namespaces (`holds_role`)."""

from __future__ import annotations

import base64
import re
import unicodedata

from pydantic import BaseModel, ConfigDict, Field, field_validator

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
KEY_TYPES = ("ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ssh-rsa", "ecdsa-sha2-nistp256")
_ID = re.compile(ID_PATTERN)


# Characters a person does not see: besides the format characters (Unicode category Cf:
# zero-width space and joiners, bidi controls, the BOM, soft hyphen), the default-ignorable
# ones of other categories (the combining grapheme joiner, Hangul fillers, variation selectors).
_INVISIBLE_OTHER = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0}
_INVISIBLE_RANGES = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF), (0x180B, 0x180F))


def is_invisible(char: str) -> bool:
    code = ord(char)
    return (
        unicodedata.category(char) == "Cf"
        or code in _INVISIBLE_OTHER
        or any(low <= code <= high for low, high in _INVISIBLE_RANGES)
    )


def invisible_characters(text: str) -> list[str]:
    """The invisible characters in `text`, as U+XXXX, in order (empty: none)."""
    return [f"U+{ord(c):04X}" for c in text if is_invisible(c)]


def normalize_id(text: str) -> str:
    """The form ids are compared in, as a person reads them: invisible characters
    dropped, NFKC, case-folded, trimmed: 'sre-lead' followed by a zero-width space is
    'sre-lead'."""
    visible = "".join(c for c in text if not is_invisible(c))
    return (
        "".join(c for c in unicodedata.normalize("NFKC", visible) if not is_invisible(c))
        .casefold()
        .strip()
    )


def check_person(text: str, option: str) -> str:
    """A person's name as typed on the command line (--requested-by, --by), or
    ValueError naming the invisible characters in it: a name must read as it compares."""
    found = invisible_characters(text)
    if found:
        raise ValueError(
            f"{option}: {ascii(text)} holds invisible characters "
            f"({', '.join(found)}); type the name without them"
        )
    return text


SLACK_TEAM = r"^[TE][A-Z0-9]{2,30}$"
SLACK_USER = r"^[UW][A-Z0-9]{2,30}$"


class SlackAccount(BaseModel):
    """A person's Slack account: the workspace (team) id and their user id."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    team: str = Field(pattern=SLACK_TEAM)
    user: str = Field(pattern=SLACK_USER)


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str = Field(description="lowercase ASCII, e.g. sre-lead.tanaka")
    display_name: str = Field(min_length=1, max_length=200)
    roles: list[str] = Field(default_factory=list, description="e.g. [sre-lead, oncall]")
    keys: list[str] = Field(min_length=1, description="OpenSSH public keys (ssh-ed25519 preferred)")
    slack: SlackAccount | None = Field(
        None, description="their Slack account, for approvals attested by the Slack gateway"
    )

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


def identity_with_id(identities: list[Identity], who: str) -> Identity | None:
    """The catalog's identity whose id is `who` (normalised), or None."""
    wanted = normalize_id(who)
    return next((i for i in identities if i.id == wanted), None)


ID_PREFIX = "id:"  # a policy entry naming one person rather than a role: "id:sre-lead.tanaka"


def holds_role(identities: list[Identity], who: str, roles: list[str]) -> bool:
    """Whether `who` is a catalog identity holding one of `roles`. Ids and role names are
    separate namespaces: a plain entry is a role, held only when the identity lists it among
    its roles (an identity whose id happens to equal a role's name does not hold the role);
    an entry "id:NAME" names one identity by its id."""
    identity = identity_with_id(identities, who)
    if identity is None:
        return False
    wanted_roles = {normalize_id(r) for r in roles if not r.startswith(ID_PREFIX)}
    wanted_ids = {normalize_id(r[len(ID_PREFIX) :]) for r in roles if r.startswith(ID_PREFIX)}
    return bool(wanted_roles & set(identity.roles)) or identity.id in wanted_ids


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
