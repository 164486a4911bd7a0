"""Sample data for tekutoko-api: a few users, their walks and GPS points.

Safe to run again: rows are keyed by natural keys (email, user + start time,
walk + sequence) and existing ones are left alone. It adapts to the schema
version, filling the step goal and badges only when those migrations ran."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import psycopg

from .migrate import DirtyError, MigrateError

USERS = [
    ("aoi@example.com", "Aoi", 10000),
    ("haruto@example.com", "Haruto", 8000),
    ("mei@example.com", "Mei", 6000),
    ("sota@example.com", "Sota", 12000),
]
# (email, start, minutes, metres, steps); around the Imperial Palace and along the Sumida.
WALKS = [
    ("aoi@example.com", datetime(2026, 10, 1, 5, 40, tzinfo=UTC), 62, 5100, 7200),
    ("aoi@example.com", datetime(2026, 10, 2, 6, 10, tzinfo=UTC), 95, 7600, 10800),
    ("haruto@example.com", datetime(2026, 10, 1, 12, 0, tzinfo=UTC), 30, 2300, 3300),
    ("mei@example.com", datetime(2026, 10, 3, 9, 15, tzinfo=UTC), 45, 3400, 4900),
    ("sota@example.com", datetime(2026, 10, 3, 4, 50, tzinfo=UTC), 120, 9800, 13600),
    ("sota@example.com", datetime(2026, 10, 4, 21, 0, tzinfo=UTC), 25, 1900, 2600),
]
POINTS_PER_WALK = 6
_CENTRE = (35.6852, 139.7528)


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    ).fetchall()
    return {name for (name,) in rows}


def _has_column(conn: psycopg.Connection, table: str, column: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND "
        "table_name = %s AND column_name = %s",
        (table, column),
    ).fetchone()
    return row is not None


def seed(conn: psycopg.Connection) -> dict[str, int]:
    """Insert what is missing; return the number of new rows per table."""
    tables = _tables(conn)
    if "schema_migrations" in tables:
        row = conn.execute("SELECT version, dirty FROM schema_migrations LIMIT 1").fetchone()
        if row is not None and row[1]:
            raise DirtyError(row[0])
    if not {"users", "walks"} <= tables:
        raise MigrateError("the schema has no users and walks tables yet: run `migrate up` first")
    added = {"users": 0, "walks": 0}
    goal = _has_column(conn, "users", "daily_step_goal")
    with conn.transaction():
        for email, name, steps_goal in USERS:
            if goal:
                cur = conn.execute(
                    "INSERT INTO users (email, display_name, daily_step_goal) VALUES (%s, %s, "
                    "%s) ON CONFLICT (email) DO NOTHING",
                    (email, name, steps_goal),
                )
            else:
                cur = conn.execute(
                    "INSERT INTO users (email, display_name) VALUES (%s, %s) ON CONFLICT (email) "
                    "DO NOTHING",
                    (email, name),
                )
            added["users"] += cur.rowcount
        for email, start, minutes, metres, steps in WALKS:
            cur = conn.execute(
                "INSERT INTO walks (user_id, started_at, ended_at, distance_m, steps) "
                "SELECT id, %s, %s, %s, %s FROM users WHERE email = %s ON CONFLICT (user_id, "
                "started_at) DO NOTHING",
                (start, start + timedelta(minutes=minutes), metres, steps, email),
            )
            added["walks"] += cur.rowcount
        if "walk_points" in tables:
            added["walk_points"] = _seed_points(conn)
        if "user_badges" in tables:
            cur = conn.execute(
                "INSERT INTO user_badges (user_id, badge_code, awarded_at) "
                "SELECT user_id, 'first_walk', min(ended_at) FROM walks WHERE ended_at IS NOT "
                "NULL GROUP BY user_id "
                "ON CONFLICT DO NOTHING"
            )
            added["user_badges"] = cur.rowcount
    return added


def _seed_points(conn: psycopg.Connection) -> int:
    added = 0
    for index, (email, start, minutes, metres, _steps) in enumerate(WALKS):
        walk = conn.execute(
            "SELECT w.id FROM walks w JOIN users u ON u.id = w.user_id WHERE u.email = %s AND "
            "w.started_at = %s",
            (email, start),
        ).fetchone()
        if walk is None:
            continue
        # A loop around the centre whose size follows the walk's distance.
        radius = metres / (2 * math.pi) / 111_000
        points = []
        for seq in range(POINTS_PER_WALK):
            angle = 2 * math.pi * seq / (POINTS_PER_WALK - 1) + index
            at = start + timedelta(minutes=minutes * seq / (POINTS_PER_WALK - 1))
            points.append(
                (
                    walk[0],
                    seq,
                    at,
                    _CENTRE[0] + radius * math.sin(angle),
                    _CENTRE[1] + radius * math.cos(angle),
                )
            )
        with conn.cursor() as cur:
            for point in points:
                cur.execute(
                    "INSERT INTO walk_points (walk_id, seq, recorded_at, latitude, longitude) "
                    "VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (walk_id, seq) DO NOTHING",
                    point,
                )
                added += cur.rowcount
    return added
