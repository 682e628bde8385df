"""The handler bench/upload.py serves: answers the bytes of the uploaded files (on disk)."""


def handler(request, response):
    response.end(f"{sum(f.size for files in request.files.values() for f in files)}\n")
