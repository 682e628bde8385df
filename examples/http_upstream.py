"""Calling another HTTP service from a handler without blocking the worker.

The handler is ``async def``: while it awaits the upstream (with treq), the worker keeps
serving other connections.  An upstream slower than ``UPSTREAM_TIMEOUT`` seconds gives 504,
one that cannot be reached gives 502.  Configure with the environment variables
``UPSTREAM_URL`` (default ``http://127.0.0.1:9501/``) and ``UPSTREAM_TIMEOUT`` (default 2).

Run it with ``twistd -n swoole -c examples/http_upstream.toml`` next to the hello example.
"""

import os

import treq
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.web.client import ResponseNeverReceived

from tx_swoole.protocols.http import Request, Response

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9501/")
UPSTREAM_TIMEOUT = float(os.environ.get("UPSTREAM_TIMEOUT", "2"))


async def handler(request: Request, response: Response) -> None:
    """Relays ``UPSTREAM_URL`` + the request path; 504 on timeout, 502 when unreachable."""
    url = UPSTREAM_URL.rstrip("/") + request.uri
    try:
        upstream = await treq.get(url, timeout=UPSTREAM_TIMEOUT)
        body = await treq.content(upstream)
    except (ResponseNeverReceived, CancelledError, ConnectingCancelledError) as e:
        reasons = getattr(e, "reasons", [])
        if reasons and not any(r.check(CancelledError) for r in reasons):
            raise  # the upstream broke the connection: a 500 with the traceback
        response.status(504)
        response.end(f"upstream {UPSTREAM_URL} timed out after {UPSTREAM_TIMEOUT}s\n")
        return
    except (ConnectError, DNSLookupError) as e:
        response.status(502)
        response.end(f"upstream {UPSTREAM_URL} unreachable: {e.__class__.__name__}\n")
        return
    response.status(upstream.code)
    for name in (b"Content-Type", b"Cache-Control"):
        value = upstream.headers.getRawHeaders(name)
        if value:
            response.header(name, value[0])
    response.end(body)
