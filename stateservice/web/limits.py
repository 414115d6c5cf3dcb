"""Request size limits: the query string (414), all headers together (431), a declared body (413).

Checked by `middleware.handle` before authentication and the handler, so they answer as its JSON errors.
Lines longer than `MAX_LINE` (one request line, one header) never reach a middleware:
aiohttp's parser answers those itself with a plain-text 400 (see docs/security.md).
"""

from __future__ import annotations

from aiohttp import web

from stateservice.errors import BodyTooLarge, HeadersTooLarge, QueryTooLong
from stateservice.web.appkeys import BODY_LIMIT

MAX_QUERY = 4096  # bytes of query string; well under the request line limit, so the answer is ours (JSON)
MAX_HEADERS = 16 * 1024  # bytes of all header names and values together
MAX_LINE = 8190  # aiohttp's own limit (web.Server max_line_size, max_field_size) on one request line or header


def check(request: web.Request) -> None:
    """Refuse an oversized request before any work is done for it (raises the 413/414/431 error)."""
    if len(request.raw_path.partition("?")[2]) > MAX_QUERY:
        raise QueryTooLong(MAX_QUERY)
    if sum(len(name) + len(value) for name, value in request.raw_headers) > MAX_HEADERS:
        raise HeadersTooLarge(MAX_HEADERS)
    limit = request.app[BODY_LIMIT]
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
