"""``python -m tx_swoole reload|stop|status --pidfile FILE``."""

import sys

from tx_swoole.cli import main

sys.exit(main())
