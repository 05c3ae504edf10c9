"""The embedded server keeps its remembered port across a stop and a start."""

from __future__ import annotations

import socket

from embedplat.db.embedded import _port_free


def _listen() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_a_port_with_a_live_listener_is_taken() -> None:
    with _listen() as server:
        assert _port_free(server.getsockname()[1]) is False


def test_connections_left_in_time_wait_do_not_take_the_port() -> None:
    # What a stopped PostgreSQL leaves behind: it closed its clients' connections first, so
    # they sit in TIME_WAIT on its port.
    server = _listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: TIME_WAIT on the server's port
    client.recv(1)
    client.close()
    server.close()
    assert _port_free(port) is True
