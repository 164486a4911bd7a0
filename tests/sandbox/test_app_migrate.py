"""The sample app's `migrate` and `seed` against the real embedded PostgreSQL,
with golang-migrate's version and dirty semantics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from sandbox.app.cli import FAIL_VERSION_ENV, conninfo_from_env, main
from sandbox.app.migrate import MIGRATIONS_DIR

LATEST = 5


class App:
    """Runs `python -m sandbox.app` in-process (fast) with a given env."""

    def __init__(self, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        self.env = env
        self.capsys = capsys

    def __call__(self, *argv: str, extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(argv), {**self.env, **(extra_env or {})})
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, f"{argv} exited {code}: {err}"
        return out

    def sql(self, query: str) -> list[tuple]:
        with psycopg.connect(conninfo_from_env(self.env), autocommit=True) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    def tables(self) -> set[str]:
        return {
            name
            for (name,) in self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }

    def columns(self, table: str) -> set[str]:
        return {
            name
            for (name,) in self.sql(
                f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'"
            )
        }


@pytest.fixture
def app(app_db: dict[str, str], capsys: pytest.CaptureFixture[str]) -> App:
    return App(app_db, capsys)


def test_up_applies_everything_once(app: App) -> None:
    code, _, err = app("migrate", "version")
    assert (code, err.strip()) == (1, "error: no migration")
    out = app.ok("migrate", "up")
    assert [line.split(" (")[0] for line in out.splitlines()] == [
        "1/u create_users",
        "2/u create_walks",
        "3/u create_walk_points",
        "4/u add_users_daily_step_goal",
        "5/u create_badges",
    ]
    assert app.ok("migrate", "version").strip() == str(LATEST)
    assert app.sql("SELECT version, dirty FROM schema_migrations") == [(LATEST, False)]
    assert {"users", "walks", "walk_points", "badges", "user_badges"} <= app.tables()
    assert app.ok("migrate", "up").strip() == "no change"


def test_up_n_and_history(app: App) -> None:
    app.ok("migrate", "up", "2")
    history = app.ok("migrate", "history").splitlines()
    assert history[0].split() == ["VERSION", "NAME", "STATE"]
    states = {line.split()[0]: line.split(None, 2)[2] for line in history[1:]}
    assert states == {
        "1": "applied",
        "2": "applied (current)",
        "3": "pending",
        "4": "pending",
        "5": "pending",
    }


def test_down_one_really_changes_the_schema(app: App) -> None:
    app.ok("migrate", "up")
    assert app.ok("migrate", "down", "1").startswith("5/d create_badges")
    assert "badges" not in app.tables() and "user_badges" not in app.tables()
    assert app.ok("migrate", "version").strip() == "4"
    assert "daily_step_goal" in app.columns("users")
    app.ok("migrate", "down", "1")
    assert "daily_step_goal" not in app.columns("users")
    assert app.ok("migrate", "version").strip() == "3"
    app.ok("migrate", "up")
    assert app.ok("migrate", "version").strip() == str(LATEST)


def test_down_to_a_version_and_to_zero(app: App) -> None:
    app.ok("migrate", "up")
    out = app.ok("migrate", "down-to", "2")
    assert [line.split(" (")[0] for line in out.splitlines()] == [
        "5/d create_badges",
        "4/d add_users_daily_step_goal",
        "3/d create_walk_points",
    ]
    assert app.ok("migrate", "version").strip() == "2"
    assert {"users", "walks"} <= app.tables() and "walk_points" not in app.tables()
    assert app.ok("migrate", "down-to", "2").strip() == "no change"
    assert (
        app.ok("migrate", "down-to", "000002").strip() == "no change"
    )  # the runbook writes versions as 000005
    code, _, err = app("migrate", "down-to", "4")
    assert code == 1 and "cannot go down to version 4: the database is at version 2" in err
    app.ok("migrate", "down-to", "0")
    assert app.tables() == {"schema_migrations"}
    assert app("migrate", "version")[2].strip() == "error: no migration"


def test_down_more_steps_than_applied_reverts_what_exists_then_fails(app: App) -> None:
    app.ok("migrate", "up", "2")
    code, out, err = app("migrate", "down", "5")
    assert code == 1 and "limit 5 short by 3" in err
    assert len(out.splitlines()) == 2
    assert app.tables() == {"schema_migrations"}


def test_failing_migration_leaves_it_dirty_and_blocks_further_runs(app: App) -> None:
    app.ok("migrate", "up", "3")
    code, out, err = app("migrate", "up", extra_env={FAIL_VERSION_ENV: "4"})
    assert code == 1
    assert out.splitlines() == []
    assert "migration 4/u add_users_daily_step_goal failed: injected failure in migration 4" in err
    assert app.ok("migrate", "version").strip() == "4 (dirty)"
    # The migration's own transaction rolled back: nothing half-applied.
    assert "daily_step_goal" not in app.columns("users")
    assert "dirty (current" in app.ok("migrate", "history")
    for argv in (["up"], ["down", "1"], ["down-to", "1"]):
        code, _, err = app("migrate", *argv)
        assert (code, err.strip()) == (1, "error: Dirty database version 4. Fix and force version.")
    code, _, err = app("seed")
    assert code == 1 and "Dirty database version 4" in err
    # The operator's way out, as with golang-migrate.
    assert app.ok("migrate", "force", "3").strip() == "forced version 3"
    app.ok("migrate", "up")
    assert app.ok("migrate", "version").strip() == str(LATEST)


def test_migration_failing_half_way_from_a_migrations_dir(app: App, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    (migrations / "000006_add_walk_ratings.up.sql").write_text(
        "CREATE TABLE walk_ratings (walk_id bigint PRIMARY KEY REFERENCES walks (id), stars int "
        "NOT NULL);\n"
        "ALTER TABLE walks ADD COLUMN rating int REFERENCES no_such_table (id);\n"
    )
    (migrations / "000006_add_walk_ratings.down.sql").write_text("DROP TABLE walk_ratings;\n")
    code, out, err = app("migrate", "up", "--migrations", str(migrations))
    assert code == 1
    assert len(out.splitlines()) == LATEST
    assert 'migration 6/u add_walk_ratings failed: relation "no_such_table" does not exist' in err
    assert app.ok("migrate", "version").strip() == "6 (dirty)"
    assert "walk_ratings" not in app.tables()


def test_database_newer_than_the_migrations_is_refused(app: App, tmp_path: Path) -> None:
    """After an image rollback the older image's migrations stop at 3."""
    app.ok("migrate", "up")
    older = tmp_path / "older"
    older.mkdir()
    for path in MIGRATIONS_DIR.glob("00000[123]_*.sql"):
        shutil.copy(path, older)
    code, _, err = app("migrate", "--migrations", str(older), "up")
    assert code == 1 and "no migration found for version 5" in err
    assert app.ok("migrate", "--migrations", str(older), "version").strip() == "5"


def test_seed_is_idempotent(app: App) -> None:
    code, _, err = app("seed")
    assert code == 1 and "run `migrate up` first" in err
    app.ok("migrate", "up")
    first = app.ok("seed")
    assert "4 new users" in first and "6 new walks" in first and "36 new walk_points" in first
    assert (
        app.ok("seed").strip()
        == "seeded: 0 new users, 0 new walks, 0 new walk_points, 0 new user_badges"
    )
    assert app.sql("SELECT count(*) FROM walks") == [(6,)]
    assert app.sql("SELECT daily_step_goal FROM users WHERE email = 'sota@example.com'") == [
        (12000,)
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required"),
        (["migrate"], "the following arguments are required"),
        (["migrate", "sideways"], "invalid choice: 'sideways'"),
        (["migrate", "down"], "the following arguments are required: N"),
        (["migrate", "down", "0"], "N must be at least 1, not 0"),
        (["migrate", "down", "two"], "N must be a whole number, not 'two'"),
        (["migrate", "down-to", "-3"], "V must be at least 0, not -3"),
        (
            ["migrate", "up", "--migrations", "/no/such/dir"],
            "migrations dir /no/such/dir does not exist",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"DATABASE_URL": "postgresql://app@127.0.0.1:1/never-reached"}
    assert main(argv, env) == 2
    assert message in capsys.readouterr().err


def test_missing_or_bad_connection_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "version"], {}) == 2
    assert (
        "set DATABASE_URL, or DATABASE_HOST, DATABASE_NAME and DATABASE_USER"
        in capsys.readouterr().err
    )
    env = {
        "DATABASE_HOST": "127.0.0.1",
        "DATABASE_NAME": "x",
        "DATABASE_USER": "y",
        "DATABASE_PORT": "fifty",
    }
    assert main(["migrate", "version"], env) == 2
    assert "DATABASE_PORT must be a port number" in capsys.readouterr().err


def test_unreachable_database_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"DATABASE_URL": f"postgresql://app:pw@127.0.0.1:{port}/tekutoko?connect_timeout=3"}
    assert main(["migrate", "up"], env) == 1
    assert f"cannot connect to the database at 127.0.0.1:{port}/tekutoko" in capsys.readouterr().err


def test_runs_as_a_module_with_database_url(app_db: dict[str, str], pg_cluster) -> None:
    url = pg_cluster.url(
        app_db["DATABASE_NAME"], app_db["DATABASE_USER"], app_db["DATABASE_PASSWORD"]
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATABASE_")} | {
        "DATABASE_URL": url
    }
    root = Path(__file__).resolve().parents[2]

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sandbox.app", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=60,
        )

    assert run("migrate", "up").returncode == 0
    result = run("migrate", "version")
    assert (result.returncode, result.stdout.strip()) == (0, str(LATEST))
    result = run("migrate", "down")
    assert result.returncode == 2 and "the following arguments are required: N" in result.stderr
