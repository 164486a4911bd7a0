"""The sandbox's embedded PostgreSQL: a real server with WAL archiving and base backups."""

from __future__ import annotations

import os
import socket
import tarfile
from pathlib import Path

import psycopg
import pytest

from sandbox.postgres import PostgresCluster, PostgresError

WAL_SEGMENT_BYTES = 16 * 1024 * 1024


async def test_serves_sql_on_loopback_with_settings_for_pitr(pg_cluster: PostgresCluster) -> None:
    settings = dict(
        await pg_cluster.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', "
            "'wal_level', 'archive_mode', 'unix_socket_directories', 'server_version_num')"
        )
    )
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["wal_level"] == "replica"
    assert settings["archive_mode"] == "on"
    assert settings["unix_socket_directories"] == str(pg_cluster.socket_dir)
    assert int(settings["server_version_num"]) >= 180000
    assert (pg_cluster.socket_dir / f".s.PGSQL.{pg_cluster.port}").exists()


async def test_app_role_logs_in_with_its_password_only(pg_cluster: PostgresCluster) -> None:
    await pg_cluster.create_role("walker", "right-password")
    await pg_cluster.create_database("walks_pw", owner="walker")
    try:
        async with await psycopg.AsyncConnection.connect(
            pg_cluster.url("walks_pw", "walker", "right-password")
        ) as conn:
            assert (await (await conn.execute("SELECT current_user")).fetchone())[0] == "walker"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            await psycopg.AsyncConnection.connect(pg_cluster.url("walks_pw", "walker", "wrong"))
    finally:
        await pg_cluster.drop_database("walks_pw")


async def test_restart_keeps_data_and_port(pg_cluster: PostgresCluster) -> None:
    await pg_cluster.execute("CREATE TABLE IF NOT EXISTS survives_restart (x int)")
    await pg_cluster.execute("INSERT INTO survives_restart VALUES (42)")
    port = pg_cluster.port
    await pg_cluster.stop()
    assert not pg_cluster.running
    assert not (pg_cluster.data_dir / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        await psycopg.AsyncConnection.connect(pg_cluster.dsn(), connect_timeout=2)
    await pg_cluster.start()
    assert pg_cluster.port == port
    assert await pg_cluster.execute("SELECT x FROM survives_restart") == [(42,)]


async def test_switch_wal_archives_the_closed_segment(pg_cluster: PostgresCluster) -> None:
    await pg_cluster.execute("CREATE TABLE IF NOT EXISTS wal_marker (at timestamptz DEFAULT now())")
    await pg_cluster.execute("INSERT INTO wal_marker DEFAULT VALUES")
    walfile = await pg_cluster.switch_wal()
    archived = pg_cluster.archive_dir / walfile
    assert archived.stat().st_size == WAL_SEGMENT_BYTES
    assert walfile in pg_cluster.archived_wal()
    (last,) = (await pg_cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver"))[0]
    assert last == walfile


async def test_plain_base_backup_is_recorded_and_starts_as_a_cluster(
    pg_cluster: PostgresCluster, pg_state_root: Path
) -> None:
    await pg_cluster.execute("CREATE TABLE IF NOT EXISTS before_backup (x int)")
    await pg_cluster.execute("INSERT INTO before_backup VALUES (7)")
    restored_state = pg_state_root / "restored"
    backup = await pg_cluster.base_backup(restored_state / "data", label="before release 1.9")
    assert backup.label == "before release 1.9"
    assert backup.format == "plain" and backup.timeline == 1
    assert backup.start_wal_file.startswith("00000001")
    assert backup.start_time <= backup.finished_at
    assert (backup.path / "backup_label").exists() and any((backup.path / "pg_wal").iterdir())
    assert pg_cluster.backups()[-1]["label"] == "before release 1.9"

    # The copy starts on its own and holds the data as of the backup.
    restored = PostgresCluster(restored_state)
    try:
        await restored.start()
        assert restored.port != pg_cluster.port
        assert await restored.execute("SELECT x FROM before_backup") == [(7,)]
    finally:
        await restored.stop()


async def test_tar_base_backup(pg_cluster: PostgresCluster, pg_state_root: Path) -> None:
    backup = await pg_cluster.base_backup(pg_state_root / "tar-backup", format="tar")
    assert sorted(os.listdir(backup.path)) == ["backup_manifest", "base.tar", "pg_wal.tar"]
    with tarfile.open(backup.path / "pg_wal.tar") as wal:
        assert backup.start_wal_file in {Path(name).name for name in wal.getnames()}
    assert backup.label.startswith("modoru ")
    with pytest.raises(PostgresError, match="not empty"):
        await pg_cluster.base_backup(backup.path)


async def test_busy_port_is_named(pg_state_root: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PostgresError, match=f"port {port} on 127.0.0.1 is already in use"):
            await PostgresCluster(pg_state_root / "busy", port=port).start()


async def test_missing_binaries_are_named(
    pg_state_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODORU_PG_BIN", str(pg_state_root / "no-such-bin"))
    with pytest.raises(
        PostgresError, match="PostgreSQL binaries not found: .*no-such-bin has no initdb"
    ):
        await PostgresCluster(pg_state_root / "nobin").start()


async def test_second_server_on_same_data_dir_is_refused(pg_cluster: PostgresCluster) -> None:
    with pytest.raises(PostgresError, match="already running on"):
        await PostgresCluster(pg_cluster.state_dir).start()
    assert await pg_cluster.execute("SELECT 1") == [(1,)]


@pytest.mark.skipif(os.geteuid() != 0, reason="the server-user dance only happens as root")
async def test_as_root_the_server_runs_unprivileged(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    (pid_file,) = (await pg_cluster.execute("SELECT pg_read_file('postmaster.pid', 0, 20)"))[0]
    pid = int(pid_file.splitlines()[0])
    assert os.stat(f"/proc/{pid}").st_uid != 0
    # tmp_path sits in pytest's root-only base dir: the error names it.
    with pytest.raises(PostgresError, match="cannot enter"):
        await PostgresCluster(tmp_path / "pg").start()
