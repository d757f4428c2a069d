"""The ops service's calls to every service's admin API (``/v1/admin/*``, shared.admin).

One :class:`~shared.resilience.ResilientHttp` per service: a timeout, retries of
transient failures only, and a breaker named ``ops-<service>``. The operator's
own bearer token is forwarded, so each service checks the ``admin`` scope
itself and nothing grants more than the operator holds.

A service that cannot be reached is reported, not raised: the status screen
shows what it can and names what it could not reach.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from shared.resilience import BreakerOpen, BreakerRegistry, ResilientHttp, TransientHttpError
from shared.services import SERVICES, service

# The services that consume or produce messages: those that mount shared.admin.
ADMIN_SERVICES: tuple[str, ...] = tuple(s.name for s in SERVICES if s.worker is not None)


class PeerUnavailable(Exception):
    """A service's admin API could not be reached or answered with an error."""

    def __init__(self, service_name: str, reason: str, status: int | None = None):
        super().__init__(f"{service_name}: {reason}")
        self.service = service_name
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class PeerAnswer:
    """One service's answer (``data``) or why there is none (``error``)."""

    service: str
    data: Any = None
    error: str | None = None


class Peers:
    """Every admin service's base URL and client."""

    def __init__(self, settings, breakers: BreakerRegistry, timeout_s: float, attempts: int):
        self.clients: dict[str, ResilientHttp] = {}
        for name in ADMIN_SERVICES:
            url = settings.peers.get(name) or service(name).local_url()
            self.clients[name] = ResilientHttp(url, breakers.get(f"ops-{name}"), timeout_s,
                                               attempts)

    def call(self, name: str, method: str, path: str, authorization: str, **kwargs) -> Any:
        """``method path`` on service ``name``; its JSON body, or :class:`PeerUnavailable`."""
        client = self.clients.get(name)
        if client is None:
            raise PeerUnavailable(name, "not a service with an admin API")
        try:
            response = client.request(method, path, headers={"Authorization": authorization},
                                      **kwargs)
        except BreakerOpen:
            raise PeerUnavailable(name, "circuit breaker open") from None
        except TransientHttpError as exc:
            raise PeerUnavailable(name, f"answered {exc.status}", exc.status) from None
        except requests.RequestException as exc:
            raise PeerUnavailable(name, f"unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise PeerUnavailable(name, f"answered {response.status_code}", response.status_code)
        try:
            return response.json()
        except ValueError:
            raise PeerUnavailable(name, "answered something that is not JSON") from None

    def gather(self, path: str, authorization: str, params: dict | None = None) -> list[PeerAnswer]:
        """``GET path`` on every admin service at once; one answer each, in service-list order.

        In parallel: a service that is down costs its timeout once, not once per service.
        """
        def ask(name: str) -> PeerAnswer:
            try:
                return PeerAnswer(name, self.call(name, "GET", path, authorization, params=params))
            except PeerUnavailable as exc:
                return PeerAnswer(name, error=exc.reason)

        with ThreadPoolExecutor(max_workers=len(self.clients) or 1,
                                thread_name_prefix="ops-peer") as pool:
            return list(pool.map(ask, self.clients))
