"""The platform's services: the one list every tool and setting reads.

Each :class:`Service` names what is needed to run it:

- ``name`` — also its schema (``<name>_svc``), its ``<NAME>_URL`` peer
  variable and its package ``services.<name>``;
- ``port`` — the local development port of its API (``make run``,
  docker-compose, the default peer URLs outside production);
- ``app`` — the gunicorn application spec of its API;
- ``worker`` — the module of its queue worker, or None when it has none;
- ``gunicorn_args`` — extra gunicorn options (e.g. a worker class);
- ``has_migrations`` — whether it owns a schema migrated with Alembic.

Plain data: nothing is imported or built from a service here (``shared``
never imports a service), so the runtime, ``make run``, the tests and the
benchmarks can all read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    """One service of the platform and how it is run."""

    name: str
    port: int
    worker: str | None
    gunicorn_args: tuple[str, ...] = ()
    has_migrations: bool = True

    @property
    def app(self) -> str:
        """The gunicorn application spec of the service's API."""
        return f"services.{self.name}.app:create_app()"

    @property
    def url_variable(self) -> str:
        """The environment variable peers read its base URL from, e.g. ``ORDER_URL``."""
        return f"{self.name.upper()}_URL"

    def local_url(self, host: str = "127.0.0.1") -> str:
        """Its API's base URL on this machine."""
        return f"http://{host}:{self.port}"


SERVICES: tuple[Service, ...] = (
    Service("order", 8001, "services.order.worker"),
    Service("delivery", 8002, "services.delivery.worker"),
    Service("inventory", 8003, "services.inventory.worker"),
    # Its API serves long-lived SSE streams: gevent greenlets, not threads.
    Service("notification", 8004, "services.notification.worker",
            gunicorn_args=("--worker-class", "gevent", "--worker-connections", "2000")),
    Service("auth", 8005, None),  # no queue to consume: an API only
    Service("payment", 8006, "services.payment.worker"),
    # The operators' API: reads the queues itself, each service's admin view over HTTP.
    Service("ops", 8007, None),
)

SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)
_BY_NAME = {s.name: s for s in SERVICES}


def service(name: str) -> Service:
    """The service called ``name``; KeyError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r} (known: {', '.join(SERVICE_NAMES)})") from None


def port_of(name: str) -> int:
    """The local API port of service ``name``."""
    return service(name).port


def with_migrations() -> tuple[str, ...]:
    """The services that own a migrated schema, in list order."""
    return tuple(s.name for s in SERVICES if s.has_migrations)
