"""`python bench/serve_variant.py serve ...`: the unchanged service, under a chosen event loop and Redis reply parser.

Benchmarks start every server through this (or `_servers.py`, which calls `apply()` too), so all of
them run alike: `BENCH_LOOP=uvloop` installs uvloop's event-loop policy before `stateservice.cli.main`
(every worker's `asyncio.run` then uses it); `BENCH_HIREDIS=1` lets redis-py pick hiredis when it is
installed, anything else hides it, so a venv that has hiredis still measures the service as it ships.
Nothing in `stateservice/` is changed or imported before the choice is made.
"""

from __future__ import annotations

import asyncio
import os
import sys


def apply() -> str:
    """Set up the loop and parser named by BENCH_LOOP / BENCH_HIREDIS; a label such as 'uvloop+hiredis'."""
    labels = []
    if os.environ.get("BENCH_LOOP", "asyncio") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        labels.append("uvloop")
    if os.environ.get("BENCH_HIREDIS", "0") == "1":
        import hiredis  # noqa: F401 - fail loudly if the variant asks for what is not installed

        labels.append("hiredis")
    else:
        sys.modules["hiredis"] = None  # type: ignore[assignment] - redis-py's `import hiredis` now fails: pure parser
    return "+".join(labels) or "plain"


def main() -> int:
    apply()
    from stateservice.cli.main import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
