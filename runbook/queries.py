"""What a query modoru runs on a service's database may be: one reading
statement (SELECT, WITH, VALUES or TABLE), nothing after it. The database
enforces read-only on top (modoru runs each query in a READ ONLY transaction
with a statement timeout); this rule refuses the rest before anything runs.

A READ ONLY transaction does not stop functions that act outside it: ending or
cancelling other sessions, dblink's connections (which write elsewhere), large
objects, configuration and server files. A query naming one of them is refused,
whether it is called, quoted ("pg_terminate_backend") or schema-qualified; so is
a function that runs SQL given as text (query_to_xml), which would hide the
name, and a Unicode-escaped name (U&"..."). The database role the checks run
as is the real guard (SELECT on named tables only, no pg_signal_backend, no
dblink): see docs/security.md, "What an operator must configure"."""

from __future__ import annotations

import re

_READING = re.compile(r"(?is)^\s*(select|with|values|table)\b")
ACTING_FUNCTIONS = (
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "set_config",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "pg_file_unlink",
    "pg_file_rename",
    "pg_logdir_ls",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_promote",
    "pg_notify",
    "pg_logical_emit_message",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_import_system_collations",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "cursor_to_xml",
    "lowrite",
    "loread",
)
ACTING_PREFIXES = (
    "dblink",
    "lo_",
    "pg_advisory",
    "pg_replication_origin",
    "pg_drop_",
    "pg_create_",
)
_WORD = re.compile(r"[a-z_][a-z0-9_$]*")


def one_reading_statement(sql: str) -> str:
    """`sql` without a trailing ';', or ValueError naming what is wrong."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise ValueError("the query is empty")
    if ";" in text:
        raise ValueError(f"must be one SELECT statement, with no ';' inside: {sql.strip()[:200]!r}")
    if not _READING.match(text):
        raise ValueError(
            "must be one SELECT statement (SELECT, WITH, VALUES or TABLE), not "
            f"{text.split()[0].upper()}: {sql.strip()[:200]!r}"
        )
    acting = acting_function(text)
    if acting:
        raise ValueError(
            f"must only read: {acting} acts outside a read-only transaction, and is refused: "
            f"{sql.strip()[:200]!r}"
        )
    return text


def acting_function(sql: str) -> str | None:
    """The first function known to act (or to run SQL given as text) that `sql` names, or
    None. Every word counts, in identifiers, quotes, comments and strings alike: a check has
    no reason to spell these names."""
    lowered = sql.lower()
    if re.search(r'u&["\']', lowered):
        return "a Unicode-escaped name (U&)"
    for word in _WORD.findall(lowered):
        if word in ACTING_FUNCTIONS or word.startswith(ACTING_PREFIXES):
            return str(word)
    return None
