"""Build for tx_swoole: Swoole's server model on Twisted."""

import re

from setuptools import setup

# One source for the version: tx_swoole/__init__.py (read as text, without importing it).
with open("tx_swoole/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(
    name="tx_swoole",
    version=VERSION,
    description=(
        "Swoole's server model on Twisted: long-lived TCP connections, an HTTP/1.1 "
        "server with hard limits, async Redis clients and a multi-process server."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # package_dir {"": "."} keeps `pip install -e .` a plain .pth entry for this folder,
    # so twisted's plugin scan finds twisted/plugins/tx_swoole_plugin.py in editable mode.
    package_dir={"": "."},
    packages=[
        "tx_swoole",
        "tx_swoole.protocols",
        "tx_swoole.clients",
        "tx_swoole.process",
        "twisted.plugins",
    ],
    package_data={"tx_swoole": ["py.typed"]},
    install_requires=[
        "twisted>=24.3",
        "zope.interface>=6",
        "hiredis>=2.3",
        "httptools>=0.6",
        "treq>=23.11",
        "websockets>=17.1",  # its C masking routine (the WebSocket server's, 100x pure Python)
        "setproctitle>=1.3",  # readable process titles (tx_swoole: worker #0), as gunicorn's
        "h2>=4.1",  # HTTP/2's frames, HPACK and stream states (sans-IO; Twisted's and hypercorn's)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "coverage>=7.10",  # [run] patch = subprocess: twistd processes measured
            "twisted[tls]",  # the Redis TLS test (pyOpenSSL, service_identity)
            "autobahn>=24.4",  # an independent WebSocket implementation for interop tests
        ],
        "dev": [
            "ruff>=0.6",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "py-spy",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
)
