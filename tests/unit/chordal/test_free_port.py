from __future__ import annotations

import socket
from pathlib import Path

from chordal.broker import FIRST_PORT, free_port


def test_a_free_port_is_bindable_and_outside_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}

    assert all(FIRST_PORT <= port < low for port in ports)
    assert len(ports) > 1  # spread, not one port handed to every caller
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_handed_out() -> None:
    held = []
    try:
        for _ in range(50):
            sock = socket.socket()
            sock.bind(("127.0.0.1", free_port()))
            sock.listen()
            held.append(sock)
        taken = {sock.getsockname()[1] for sock in held}
        assert all(free_port() not in taken for _ in range(50))
    finally:
        for sock in held:
            sock.close()
