"""`send_at_once` (contract module): Nagle's algorithm off on TCP connections to the broker, anything
else left alone (the edge agent and the hub set it on every connection paho opens)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from seclusion_contract import send_at_once


@pytest.fixture
def tcp_pair() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        yield client
    finally:
        for s in (client, accepted, server):
            s.close()


def test_a_tcp_connection_sends_each_packet_at_once(tcp_pair: socket.socket) -> None:
    assert tcp_pair.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the kernel's default
    send_at_once(tcp_pair)
    assert tcp_pair.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_unix_socket_or_anything_else_is_left_as_it_is() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    try:
        send_at_once(ours)  # TCP_NODELAY means nothing here: no error either
        ours.sendall(b"x")
        assert theirs.recv(1) == b"x"
    finally:
        ours.close()
        theirs.close()
    send_at_once(object())  # paho's websocket wrapper, say


def test_a_closed_socket_is_no_reason_for_a_connect_to_fail() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.close()
    send_at_once(sock)  # paho's own use of the socket is where a closed one shows
