"""HTTP handlers that the slow-client tests serve under ``twistd swoole``."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor, task

from tx_swoole.protocols.http import Request, Response, streaming


def handler(request: Request, response: Response) -> Any:
    """``/upload`` answers the body's length, ``/big?n=N`` N bytes, ``/late`` after 0.2 s,
    ``/nodelay`` the TCP_NODELAY option of its own socket, ``/parts`` three writes, ``/tls``
    the scheme and the common name of the client's certificate, ``/peer`` the client's
    address as the server sees it."""
    path = request.path
    if path == "/upload":
        return response.end(str(len(request.body)))
    if path == "/big":
        return response.end(b"x" * int(request.arg("n") or 0))
    if path == "/late":
        return task.deferLater(reactor, 0.2, response.end, "late")  # type: ignore[arg-type]
    if path == "/nodelay":
        sock = request.owner.transport.getHandle()
        return response.end(str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
    if path == "/fail":
        raise RuntimeError("asked to fail")
    if path == "/tls":
        cert = request.peer_certificate
        names = dict(pair[0] for pair in cert["subject"]) if cert else {}
        return response.end(f"{request.scheme} {names.get('commonName', '-')}")
    if path == "/peer":
        host, port = request.remote_addr
        return response.end(f"{host} {port}")
    if path == "/parts":
        response.write("a")
        response.write("b")
        return response.end("c")
    return response.end("ok")


def blocking(request: Request, response: Response) -> Any:
    """``/?sleep=S`` holds the reactor S seconds (as a blocking call would); ``/stats`` answers
    the table's server.stats()."""
    if request.path == "/stats":
        return response.end(repr(request.owner.server.stats()))
    import time

    time.sleep(float(request.args.get("sleep", ["0"])[0]))
    return response.end("slept")


def uploads(request: Request, response: Response) -> Any:
    """``/upload``: the form fields and each file's name, size and SHA-256 (read from its
    temporary file); ``/pid``: the worker's pid."""
    import hashlib
    import os

    if request.path == "/pid":
        return response.end(str(os.getpid()))
    words = [f"{k}={v[0]}" for k, v in request.form.items()]
    for name, files in request.files.items():
        for upload in files:
            digest = hashlib.sha256()
            with upload.open() as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            words.append(f"{name}={upload.filename} {upload.size} {digest.hexdigest()}")
    return response.end(" ".join(words) + "\n")


@streaming
async def streamed(request: Request, response: Response) -> Any:
    """Takes the body as it comes: ``/slow`` reads it slowly; answers its length."""
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if request.path == "/slow":
            await task.deferLater(reactor, 0.01, lambda: None)
    return response.end(str(size))


@streaming(when=lambda request: request.path == "/stream")
async def streamed_some(request: Request, response: Response) -> Any:
    """``/stream`` takes the body as it comes; other paths get it whole, as usual."""
    if request.path == "/stream":
        return response.end(b"streamed %d" % len(await request.stream().read()))
    return response.end(b"whole %d" % len(request.body))
