"""shared.services (the one list of services) matches the code, and the bootstrap CLI's guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import bootstrap
from shared.services import SERVICE_NAMES, SERVICES, port_of, service, with_migrations

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"


def test_every_service_package_is_listed_and_every_listed_service_exists():
    packages = {p.name for p in SERVICES_DIR.iterdir() if (p / "app.py").exists()}
    assert set(SERVICE_NAMES) == packages


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_each_entry_describes_its_package(svc):
    package = SERVICES_DIR / svc.name
    module, _, factory = svc.app.partition(":")
    assert module == f"services.{svc.name}.app" and factory == "create_app()"
    if svc.worker is None:
        assert not (package / "worker.py").exists(), f"{svc.name} has a worker the list omits"
    else:
        assert svc.worker == f"services.{svc.name}.worker" and (package / "worker.py").exists()
    assert svc.has_migrations == (package / "migrations" / "env.py").exists()


def test_ports_are_distinct_and_lookups_name_unknown_services():
    assert len({s.port for s in SERVICES}) == len(SERVICES)
    assert port_of("order") == 8001 and port_of("auth") == 8005
    with pytest.raises(KeyError, match="unknown service 'billing'"):
        service("billing")
    assert set(with_migrations()) <= set(SERVICE_NAMES)


def test_bootstrap_cli_requires_a_database_url(monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert bootstrap.main(["--skip-queues"]) == 2
    assert "DATABASE_URL: is required but not set" in capsys.readouterr().err


def test_bootstrap_cli_refuses_unknown_services(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(SystemExit) as info:
        bootstrap.main(["order", "billing"])
    assert info.value.code == 2
    assert "unknown service(s): billing" in capsys.readouterr().err
