"""A real ``twistd swoole`` WebSocket server against real clients (``websockets``, raw
sockets, ``http.client``)."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tx_swoole.protocols._websocket import (
    CLOSE,
    TEXT,
    Closed,
    WebSocketConnection,
    close_payload,
    masked_frame,
)

from .support import ROOT, Twistd, write_config

pytestmark = pytest.mark.integration
SETTINGS = {"worker_num": 0, "package_max_length": 1 << 20, "websocket_compression": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Twistd, int]]:
    cfg = write_config(
        tmp_path_factory.mktemp("ws"),
        {"type": "websocket", "port": 0, "app": "tests.ws_apps:Echo",
         "http_app": "tests.ws_apps:http"}, SETTINGS,
    )  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as twistd:
        yield twistd, twistd.port()


def client(port: int, path: str = "/", **kw: Any) -> ClientConnection:
    url = f"ws://127.0.0.1:{port}{path}"
    ws = connect(url, open_timeout=10, close_timeout=10, legacy=True, **kw)
    assert str(ws.recv(timeout=10)).startswith("welcome #")
    return ws


def test_echo_text_binary_large_and_fragmented(server: tuple[Twistd, int]) -> None:
    with client(server[1], compression=None) as ws:
        for message in ("hello", "ünïcode 😀", b"\x00\xff" * 10, "x" * 70000, b"\x01" * 65536):
            ws.send(message)
            assert ws.recv(timeout=10) == message
        ws.send(["frag", "men", "ted"])  # one message in three frames
        assert ws.recv(timeout=10) == "fragmented"
        ws.send([b"\x01", b"\x02"])
        assert ws.recv(timeout=10) == b"\x01\x02"


def test_compressed_when_the_client_offers_it(server: tuple[Twistd, int]) -> None:
    with client(server[1]) as ws:  # websockets offers permessage-deflate by default
        assert ws.response is not None
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        for message in ("compress me " * 100, b"\x00" * 100000, "again " * 100):
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_subprotocol_path_and_plain_http_on_the_same_port(server: tuple[Twistd, int]) -> None:
    port = server[1]
    ws = connect(f"ws://127.0.0.1:{port}/room/1", subprotocols=["other", "chat"], open_timeout=10)  # type: ignore[list-item]
    with ws:
        assert ws.subprotocol == "chat" and ws.recv(timeout=10).endswith("to /room/1")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/page")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"plain http /page"


def test_a_refused_handshake_gets_its_status(server: tuple[Twistd, int]) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server[1]}/", origin="http://evil.example", open_timeout=10)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert b"evil.example is not allowed" in refused.value.response.body


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Sec-WebSocket-Version": "8"}, 426),
        ({"Sec-WebSocket-Key": "short"}, 400),
    ],
)
def test_bad_handshakes(server: tuple[Twistd, int], headers: dict[str, str], status: int) -> None:
    base = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", server[1], timeout=10)
    conn.request("GET", "/", headers={**base, **headers})
    response = conn.getresponse()
    assert response.status == status
    if status == 426:
        assert response.getheader("Sec-WebSocket-Version") == "13"


def test_server_close_with_code_and_reason(server: tuple[Twistd, int]) -> None:
    ws = client(server[1])
    ws.send("close")
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "bye")


def test_broadcast_and_connection_ids(server: tuple[Twistd, int]) -> None:
    clients = [client(server[1]) for _ in range(3)]
    try:
        clients[0].send("broadcast:news")
        for ws in clients:
            assert ws.recv(timeout=10) == "news"
        assert clients[0].recv(timeout=10) == "sent to 3"
        clients[1].send("ids")
        assert len(clients[1].recv(timeout=10).split()) == 3
    finally:
        for ws in clients:
            ws.close()


def test_async_hooks_keep_message_order(server: tuple[Twistd, int]) -> None:
    with client(server[1]) as ws:
        ws.send("slow")
        ws.send("after")
        assert [ws.recv(timeout=10), ws.recv(timeout=10)] == ["slow done", "after"]


def test_a_failing_hook_closes_with_1011(server: tuple[Twistd, int]) -> None:
    ws = client(server[1])
    ws.send("fail")
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    server[0].wait_for(b"messageReceived of connection \\d+ failed")


def test_too_big_is_closed_with_1009(server: tuple[Twistd, int]) -> None:
    ws = client(server[1], max_size=None, compression=None)
    ws.send(b"x" * ((1 << 20) + 1))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def handshake() -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")  # fmt: skip


def raw_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(handshake())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def read_until_closed(sock: socket.socket) -> list[Any]:
    peer = WebSocketConnection(client_side=True)
    events: list[Any] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return events
        events += peer.receive(data)


def test_bad_utf_8_from_a_raw_client_is_closed_with_1007(server: tuple[Twistd, int]) -> None:
    sock = raw_client(server[1])
    sock.sendall(masked_frame(TEXT, b"\xce\xba\xed\xa0\x80"))
    events = read_until_closed(sock)
    assert str(events[0]).startswith("welcome") and events[-1].code == 1007


def test_frames_in_the_handshakes_read_are_kept(server: tuple[Twistd, int]) -> None:
    sock = socket.create_connection(("127.0.0.1", server[1]), timeout=10)
    sock.sendall(handshake() + masked_frame(TEXT, b"early") + masked_frame(CLOSE, b"\x03\xe8"))
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    events = WebSocketConnection(client_side=True).receive(data.split(b"\r\n\r\n", 1)[1])
    assert [e for e in events if isinstance(e, str)][1:] == ["early"]
    assert events[-1].code == 1000


def test_shutdown_sends_1001_to_open_connections(tmp_path: Any) -> None:
    cfg = write_config(tmp_path, {"type": "websocket", "port": 0, "app": "tests.ws_apps:Echo"},
                       {"worker_num": 0, "max_wait_time": 5})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as twistd:
        clients = [client(twistd.port()) for _ in range(5)]
        twistd.signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert twistd.stop() == 0
        assert b"still had" not in twistd.output  # every close handshake completed in time


def test_garbage_frames_then_a_normal_client_is_served(server: tuple[Twistd, int]) -> None:
    import random

    rng = random.Random(7)
    for _ in range(20):
        sock = raw_client(server[1])
        sock.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400))))
        sock.close()
    with client(server[1]) as ws:
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"
    output = bytes(server[0].output)
    assert b"Unhandled Error" not in output
    assert output.count(b"Traceback") == output.count(b"RuntimeError: asked to fail")


def test_a_server_of_swoole_style_functions(tmp_path: Any) -> None:
    events = {"handshake": "tests.ws_apps:on_handshake", "open": "tests.ws_apps:on_open",
              "message": "tests.ws_apps:on_message", "close": "tests.ws_apps:on_close"}  # fmt: skip
    cfg = write_config(tmp_path, {"type": "websocket", "port": 0}, {"worker_num": 0}, events)
    with Twistd(cfg, cwd=ROOT) as twistd:
        port = twistd.port()
        with connect(f"ws://127.0.0.1:{port}/room", open_timeout=10) as watcher:
            assert watcher.recv(timeout=10).startswith("hello ")
            with connect(f"ws://127.0.0.1:{port}/x", open_timeout=10) as ws:
                greeting = ws.recv(timeout=10)
                assert greeting.startswith("hello ") and greeting.endswith(" at /x")
                ws.send(b"\x01bin")
                assert ws.recv(timeout=10) == b"\x01bin"
            assert watcher.recv(timeout=10) == f"{greeting.split()[1]} left with 1000"
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/private", open_timeout=10)
        assert refused.value.response.status_code == 401


def test_swoole_frame_settings_hand_control_frames_to_the_message_function(tmp_path: Any) -> None:
    settings = {"worker_num": 0, "open_websocket_ping_frame": True,
                "open_websocket_close_frame": True}  # fmt: skip
    cfg = write_config(tmp_path, {"type": "websocket", "port": 0}, settings,
                       {"message": "tests.ws_apps:on_frame"})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as twistd:
        port = twistd.port()
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
            assert ws.ping(b"beat").wait(10)  # the function's own pong
            assert ws.recv(timeout=10) == "pinged beat"
        with raw_client(port) as sock:  # the close frame is the function's before its reply
            sock.sendall(masked_frame(CLOSE, close_payload(4001, "done")))
            events = read_until_closed(sock)
        assert events[0] == "closing 4001 done" and events[-1] == Closed(4001, "")
