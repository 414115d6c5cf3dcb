"""Types for tests that serve the application in-process (see `tests/integration/conftest.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
