"""What a query modoru runs on a service's database may be: one reading
statement (SELECT, WITH, VALUES or TABLE), nothing after it. The database
enforces read-only on top (modoru runs each query in a READ ONLY transaction
with a statement timeout); this rule refuses the rest before anything runs."""

from __future__ import annotations

import re

_READING = re.compile(r"(?is)^\s*(select|with|values|table)\b")


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
    return text
