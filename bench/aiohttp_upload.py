"""The aiohttp peer for bench/upload.py: multipart uploads written to temporary files on disk
with aiohttp's own multipart reader, answering the bytes stored.
usage: PY aiohttp_upload.py PORT"""

import os
import sys
import tempfile

from aiohttp import web


async def upload(request: web.Request) -> web.Response:
    reader = await request.multipart()
    stored = 0
    async for part in reader:
        if part.filename is None:
            await part.text()
            continue
        fd, path = tempfile.mkstemp(prefix="aiohttp.upfile.")
        with os.fdopen(fd, "wb") as f:
            while chunk := await part.read_chunk(1 << 16):
                f.write(chunk)
                stored += len(chunk)
        os.unlink(path)
    return web.Response(text=f"{stored}\n")


app = web.Application(client_max_size=2**40)
app.router.add_post("/upload", upload)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
