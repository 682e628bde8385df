"""Echo servers for the TCP benchmarks: ``python bench/servers.py MODE PORT [HEARTBEAT]``.

MODE is ``ours`` (ConnectionTable + write-through transport), ``ours-plain-transport`` (the
same factory on reactor.listenTCP), ``http`` (the hello example's HTTPFactory) or ``twisted``
(a plain Twisted echo with TimeoutMixin when HEARTBEAT is given, on Twisted's default reactor;
the others run on the one ``twistd swoole`` installs).  Prints ``ready`` once
listening.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1] != "twisted":
    from tx_swoole.reactor import install

    install()  # the reactor `twistd swoole` runs

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0] + "/examples")


class PlainEcho(Protocol, TimeoutMixin):
    timeOut: float | None = None

    def connectionMade(self) -> None:
        self.setTimeout(self.timeOut)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.transport.write(data)

    def timeoutConnection(self) -> None:
        self.transport.abortConnection()


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    heartbeat = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    if mode == "http":
        from http_hello import handler

        from tx_swoole.protocols.http import HTTPFactory
        from tx_swoole.transport import listen_tcp

        listen_tcp(port, HTTPFactory(handler, {"max_conn": 100_000}), 4096, "127.0.0.1")
    elif mode.startswith("ours"):
        from tcp_echo import Echo

        from tx_swoole.protocols.tcp import ConnectionTable
        from tx_swoole.transport import listen_tcp

        settings = {"max_conn": 100_000}
        if heartbeat:
            settings.update(heartbeat_check_interval=1, heartbeat_idle_time=heartbeat)
        factory = ConnectionTable(Echo, settings)
        if mode == "ours":
            listen_tcp(port, factory, backlog=4096, interface="127.0.0.1")
        else:
            reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1")
    else:
        PlainEcho.timeOut = heartbeat or None
        reactor.listenTCP(port, Factory.forProtocol(PlainEcho), 4096, "127.0.0.1")
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
