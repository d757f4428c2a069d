"""SSRF protection for webhook delivery URLs.

A partner chooses where we POST, so a delivery URL must never reach our own
network: loopback, private, link-local, multicast, reserved or cloud metadata
addresses are refused unless the allow-list (``NOTIFICATION_WEBHOOK_ALLOWED_HOSTS``:
host names, IP addresses or CIDR networks) names them.

Checked twice: when a subscription is saved (:meth:`UrlPolicy.check_url`
resolves the host) and on every connection (:func:`guarded_session` checks the
address the socket actually connected to, before any byte is sent), so a DNS
answer that changes after the check (DNS rebinding) cannot get through.
Redirects are never followed and environment proxies are ignored.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

MAX_URL_CHARS = 2000
# Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Azure wireserver).
METADATA_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32"))
# Shared address space (carrier-grade NAT) is not "private" to Python but is not the internet.
EXTRA_BLOCKED = tuple(ipaddress.ip_network(n) for n in ("100.64.0.0/10",))

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL is not one we may deliver to (the message says why)."""


def address_problem(ip: IpAddress) -> str | None:
    """Why ``ip`` may not be a webhook target, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in METADATA_NETWORKS if net.version == ip.version):
        return "cloud metadata address"
    checks = (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
              ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
              ("private", ip.is_private), ("reserved", ip.is_reserved))
    for name, hit in checks:
        if hit:
            return f"{name} address"
    if any(ip in net for net in EXTRA_BLOCKED if net.version == ip.version):
        return "shared (carrier-grade NAT) address"
    if not ip.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class UrlPolicy:
    """Which delivery URLs are acceptable."""

    allowed_hosts: tuple[str, ...] = ()
    _names: frozenset[str] = field(init=False, repr=False)
    _networks: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names, networks = set(), []
        for entry in self.allowed_hosts:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    def check_url(self, url: str, resolve: bool = True) -> None:
        """Raise :class:`UnsafeUrl` unless ``url`` is an http(s) URL of a permitted host."""
        host, port = self.parse(url)
        if resolve:
            self.check_host(host, port)

    def parse(self, url: str) -> tuple[str, int]:
        """(host, port) of a syntactically acceptable URL."""
        if len(url) > MAX_URL_CHARS:
            raise UnsafeUrl(f"must be at most {MAX_URL_CHARS} characters")
        if any(ch.isspace() or ord(ch) < 32 for ch in url):
            raise UnsafeUrl("must not contain whitespace or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UnsafeUrl(f"is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise UnsafeUrl("must be an http:// or https:// URL")
        if not parts.hostname:
            raise UnsafeUrl("must name a host")
        if parts.username is not None or parts.password is not None:
            raise UnsafeUrl("must not contain credentials (use the signing secret instead)")
        if parts.fragment:
            raise UnsafeUrl("must not contain a fragment")
        return parts.hostname.lower().rstrip("."), port or (443 if parts.scheme == "https" else 80)

    def check_host(self, host: str, port: int) -> None:
        """Resolve ``host`` and check every address it resolves to."""
        if self.host_allowed(host):
            return
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            self.check_address(host, literal)
            return
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnsafeUrl(f"host {host} does not resolve ({exc})") from None
        for info in infos:
            self.check_address(host, ipaddress.ip_address(info[4][0].split("%", 1)[0]))

    def host_allowed(self, host: str) -> bool:
        """Whether the allow-list names ``host`` itself."""
        return host.lower().rstrip(".") in self._names

    def check_address(self, host: str, ip: IpAddress) -> None:
        """Raise :class:`UnsafeUrl` if ``ip`` is not public and not allow-listed."""
        if any(ip in net for net in self._networks if net.version == ip.version):
            return
        problem = address_problem(ip)
        if problem:
            raise UnsafeUrl(f"{host} resolves to {ip} ({problem}), which is not allowed")

    def check_peer(self, host: str, peer: str) -> None:
        """Check the address a socket connected to (called before anything is sent)."""
        if self.host_allowed(host):
            return
        self.check_address(host, ipaddress.ip_address(peer.split("%", 1)[0]))


def _guarded_pools(policy: UrlPolicy):
    def checked(conn, sock):
        try:
            policy.check_peer(conn.host, sock.getpeername()[0])
        except UnsafeUrl:
            sock.close()
            raise
        return sock

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self):
            return checked(self, super()._new_conn())

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self):
            return checked(self, super()._new_conn())

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections refuse addresses the policy forbids."""

    def __init__(self, policy: UrlPolicy, **kwargs):
        self.policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pools(self.policy)


def guarded_session(policy: UrlPolicy, pool_connections: int = 100,
                    pool_maxsize: int = 20) -> requests.Session:
    """A requests session for webhook delivery: policy-checked sockets, no env proxies."""
    session = requests.Session()
    session.trust_env = False  # an HTTP(S)_PROXY would make every peer look like the proxy
    adapter = GuardedAdapter(policy, pool_connections=pool_connections, pool_maxsize=pool_maxsize,
                             max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
