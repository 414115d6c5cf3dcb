"""SIGHUP for the tokens file: re-read it and swap the tokens in, if the file is good.

The charts' reload (`charts/reload.py`) calls this one; signals are wired in `server/supervisor.py`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from stateservice.errors import StartupError
from stateservice.security.tokens import TokensRef, load_tokens

log = structlog.get_logger(__name__)


class TokensReloader:
    """Re-reads the tokens file (`--tokens`) and swaps the tokens `ref` holds, if the file is good.

    The same checks as start-up (`load_tokens`); on any problem the old tokens keep working and
    `tokens_reload_failed` says why. Requests already past authentication finish as they began.
    """

    def __init__(self, ref: TokensRef, path: Path) -> None:
        self.ref = ref
        self.path = path

    async def reload(self) -> bool:
        try:
            fresh = await asyncio.get_running_loop().run_in_executor(None, load_tokens, self.path)
        except StartupError as exc:
            log.error("tokens_reload_failed", path=str(self.path), problems=str(exc).splitlines(), kept=self._names())
            return False
        except Exception:  # a bug, not the file: the old tokens still serve
            log.exception("tokens_reload_failed", path=str(self.path), kept=self._names())
            return False
        old = set(self._names())
        self.ref.tokens = fresh
        new = set(self._names())
        log.info(
            "tokens_reloaded",
            path=str(self.path),
            tokens=len(fresh.entries),
            added=sorted(new - old),
            removed=sorted(old - new),
        )
        return True

    def _names(self) -> list[str]:
        return sorted(entry.name for entry in self.ref.tokens.entries)
