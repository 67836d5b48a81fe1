"""Can this machine reach a server? One TCP connection with a deadline, made before handing over to a
client that sets no timeout of its own (the kaggle client, tensorflow_hub), so that offline a command
fails in seconds saying why instead of hanging.

Standard library only: the CLI parser imports it (through kaggle_io).
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request

# Offline, an unresolvable host or a silently dropping firewall must not stall a run: probe this long at most.
TIMEOUT_S = 5.0


def unreachable(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """None if the server of `url`, or the proxy urllib and requests would use for it (HTTPS_PROXY and
    the like, NO_PROXY honoured), accepts a TCP connection within `timeout_s`; else one line,
    `cannot reach HOST:PORT[ through the proxy HOST:PORT] (why)`."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = f"{host}:{port}"
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or "", p.port or 80
        target += f" through the proxy {host}:{port}"  # host:port only: a proxy URL may hold a password
    no_answer = f"no answer within {timeout_s:g} s"
    failure: list[str] = []
    done = threading.Event()

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except TimeoutError:
            failure.append(no_answer)
        except OSError as exc:
            failure.append(exc.strerror or str(exc))
        done.set()

    # A thread, because name resolution (getaddrinfo) ignores the socket timeout and can hang long offline.
    threading.Thread(target=connect, daemon=True).start()
    if not done.wait(timeout_s):
        return f"cannot reach {target} ({no_answer})"
    return f"cannot reach {target} ({failure[0]})" if failure else None
