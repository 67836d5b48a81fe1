"""The one network probe (kaggle_io and hub: backbones call it before a client that sets no timeout)."""

from __future__ import annotations

import contextlib
import os
import socket
import time

import pytest

from lresizervit.net import unreachable


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    for key in [k for k in os.environ if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")]:
        monkeypatch.delenv(key)


@contextlib.contextmanager
def listening(backlog: int = 16):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(backlog)
        yield srv.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_listening_server_is_reachable_and_a_closed_port_says_why():
    with listening() as port:
        assert unreachable(f"http://127.0.0.1:{port}/x") is None
    port = closed_port()
    assert unreachable(f"https://127.0.0.1:{port}/") == f"cannot reach 127.0.0.1:{port} (Connection refused)"


def test_the_proxy_is_probed_instead_named_without_its_password(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:proxypass@127.0.0.1:{port}")
    assert unreachable("https://api.example.invalid/v1") == (
        f"cannot reach api.example.invalid:443 through the proxy 127.0.0.1:{port} (Connection refused)")
    with listening() as port:
        monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{port}")  # no scheme: http:// is meant
        assert unreachable("https://api.example.invalid/v1") is None  # the proxy resolves the name, not we
        # NO_PROXY: the server itself is probed, as requests and urllib would connect to it directly.
        monkeypatch.setenv("NO_PROXY", "example.invalid")
        why = unreachable("https://api.example.invalid/v1")
    assert why.startswith("cannot reach api.example.invalid:443 (") and "proxy" not in why


def test_a_server_that_never_answers_fails_within_the_timeout():
    with listening(backlog=0) as port:
        # Fill the accept queue of a server that never accepts: the kernel then drops further SYNs.
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        try:
            start = time.monotonic()
            why = unreachable(f"http://127.0.0.1:{port}", timeout_s=0.5)
            seconds = time.monotonic() - start
        finally:
            for s in fillers:
                s.close()
    assert why == f"cannot reach 127.0.0.1:{port} (no answer within 0.5 s)"
    assert seconds < 2
