"""shared/pooled_http.py against a real HTTP/1.1 server on a loopback port."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pybreaker
import pytest

from shared.pooled_http import PeerConnectionError, PooledSession
from shared.resilience import ResilientHttp, TransientHttpError, is_transient
from tests.support.servers import serving


class _Peer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn answers
    seen: list[dict] = []
    connections: set[tuple] = set()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        _Peer.seen.append({"method": self.command, "path": self.path, "body": body,
                           "headers": dict(self.headers)})
        _Peer.connections.add(self.client_address)
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        status = 503 if self.path.startswith("/busy") else 200
        if self.path.startswith("/text"):
            reply, media = b"not json", "text/plain"
        else:
            reply, media = json.dumps({"path": self.path}).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("X-Peer", "yes")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_PUT = do_DELETE = _answer

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[str]:
    _Peer.seen, _Peer.connections = [], set()
    with serving(_Peer) as url:
        yield url


def test_json_headers_and_params_go_out_and_the_answer_comes_back(peer):
    session = PooledSession()
    response = session.request("PUT", f"{peer}/v1/reservations/1", json={"lines": [1, "é"]},
                               headers={"X-Request-ID": "r-1"}, params={"a": "1 2"}, timeout=2)
    assert response.status_code == 200
    assert response.json() == {"path": "/v1/reservations/1?a=1+2"}
    assert response.headers["x-peer"] == "yes"  # case-insensitive, as requests' headers
    [seen] = _Peer.seen
    assert json.loads(seen["body"]) == {"lines": [1, "é"]}
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["X-Request-ID"] == "r-1"


def test_connections_are_kept_alive(peer):
    session = PooledSession()
    for _ in range(5):
        assert session.request("GET", f"{peer}/x", timeout=2).status_code == 200
    assert len(_Peer.connections) == 1


def test_a_body_that_is_not_json_raises_value_error(peer):
    response = PooledSession().request("GET", f"{peer}/text", timeout=2)
    assert response.text == "not json"
    with pytest.raises(ValueError):
        response.json()


def test_refused_and_timed_out_calls_are_transient_errors(peer):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    session = PooledSession()
    with pytest.raises(PeerConnectionError) as refused:
        session.request("GET", f"http://127.0.0.1:{closed_port}/x", timeout=1)
    with pytest.raises(PeerConnectionError) as timed_out:
        session.request("GET", f"{peer}/slow", timeout=0.1)
    assert is_transient(refused.value) and is_transient(timed_out.value)


def test_resilient_http_retries_a_busy_peer_on_this_transport(peer):
    http = ResilientHttp(peer, pybreaker.CircuitBreaker(fail_max=10), timeout_s=1, attempts=3,
                         session=PooledSession())
    with pytest.raises(TransientHttpError):
        http.request("GET", "/busy")
    assert [s["path"] for s in _Peer.seen] == ["/busy"] * 3
    assert http.request("GET", "/fine").json() == {"path": "/fine"}
