"""How this host dials a sandbox's agent at an address on one of its own bridges.

A Docker sandbox's address (``172.18.0.5``) is private and reached only through the fleet's bridge.
Once that bridge is gone (its last sandbox removed, the engine restarted), the kernel would send a
packet for a stale record's address out of the default route, off the machine, carrying the
sandbox's secret. A socket bound to the bridge (``SO_BINDTODEVICE``, open to any user since Linux
5.7) leaves through that interface or not at all: with the bridge gone, the connect fails at once.
"""

from __future__ import annotations

import socket

#: TCP_NODELAY as urllib3 sets it by default (a call is headers then a body: two writes).
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def socket_options(interface: str | None) -> list[tuple[int, int, int | bytes]]:
    """The options of a socket to the agent: bound to ``interface`` when the record names one."""
    if not interface:
        return [NODELAY]
    return [NODELAY, (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())]


def connect(address: tuple[str, int], interface: str | None, timeout: float) -> socket.socket:
    """A connected TCP socket to ``address``, leaving only through ``interface`` if one is named
    (OSError when that interface does not exist, before any packet is sent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for level, option, value in socket_options(interface):
            sock.setsockopt(level, option, value)
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock
