"""Hello world over HTTP: ``twistd -n swoole -c examples/http_hello.toml``."""

from tx_swoole.protocols.http import Request, Response


def handler(request: Request, response: Response) -> None:
    """Answers every request with a small HTML page and static-file-like headers."""
    response.header("Last-Modified", "Thu, 18 Jun 2015 10:24:27 GMT")
    response.header("E-Tag", "55829c5b-17")
    response.header("Accept-Ranges", "bytes")
    response.end("<h1>Hello World!</h1>")
