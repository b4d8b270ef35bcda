"""A misbehaving engine process for tests/test_qgis_engine.py: takes a call, then ignores cancel and end of input.

Run as ``python -m engine_deaf_child`` (tests/ on PYTHONPATH). It answers the first request with ``taken`` and
progress, then sleeps whatever comes on stdin, as an engine stuck in a long step would.
"""

from __future__ import annotations

import json
import signal
import sys
import time

PREFIX = "FASTUNET "


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
    request = json.loads(sys.stdin.readline())
    for message in ({"taken": True}, {"percent": 10.0}):
        sys.stdout.write(PREFIX + json.dumps({"id": request["id"], **message}) + "\n")
        sys.stdout.flush()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
