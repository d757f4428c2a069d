"""The embedded PostgreSQL refuses data it cannot open, before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack import postgres


def test_a_data_directory_of_another_major_version_is_refused_with_the_way_out(tmp_path):
    data_dir = tmp_path / "pg"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("18\n")
    with pytest.raises(RuntimeError) as info:
        postgres.start_embedded_postgres(data_dir)
    message = str(info.value)
    assert f"holds PostgreSQL 18 data, but the embedded server is PostgreSQL {postgres.PG_MAJOR}" in message
    assert "make clean" in message
    assert not (data_dir / "postmaster.pid").exists()


def test_a_directory_that_is_not_a_cluster_is_refused(tmp_path):
    data_dir = tmp_path / "pg"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("not postgres")
    with pytest.raises(RuntimeError, match="neither empty nor a PostgreSQL data directory"):
        postgres.start_embedded_postgres(data_dir)


def test_the_major_version_is_read_from_pg_version(tmp_path):
    assert postgres.data_dir_major(tmp_path) is None
    (tmp_path / "PG_VERSION").write_text("16\n")
    assert postgres.data_dir_major(tmp_path) == 16


def test_the_embedded_major_is_the_one_docker_compose_runs():
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    image = compose["services"]["postgres"]["image"]
    assert int(image.split(":")[1].split(".")[0]) == postgres.PG_MAJOR, image
