"""The leader lease: one key that at most one worker holds, renewed by its holder only.

`SET stateservice:leader VALUE NX PX ttl` takes it; renew and release are Lua scripts that
act only while the key still holds this worker's VALUE (which carries a random token), so a
worker that was paused past its lease can neither extend nor delete its successor's.
Leadership only saves duplicate work: every time move is a chart transaction of its own.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from stateservice.store import keys

RENEW = """
-- KEYS[1] = the lease key / ARGV[1] = this holder's value / ARGV[2] = ttl in milliseconds
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
-- KEYS[1] = the lease key / ARGV[1] = this holder's value
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, redis: Redis, ttl: float, identity: str, pid: int) -> None:
        self.redis = redis
        self.ttl_ms = max(1, int(ttl * 1000))
        self.value = json.dumps({"id": identity, "pid": pid, "token": secrets.token_hex(16)})
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        return bool(await self.redis.set(keys.leader(), self.value, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """Extend the lease if this worker still holds it; False when it was lost."""
        return bool(await self._renew(keys=[keys.leader()], args=[self.value, self.ttl_ms]))

    async def release(self) -> bool:
        """Give the lease up now (so another worker takes over at once), if this worker holds it."""
        return bool(await self._release(keys=[keys.leader()], args=[self.value]))


async def holder(redis: Redis, now: datetime) -> dict[str, Any]:
    """Who leads: `{"id", "pid", "expires_at"}`, or `{"id": None}` while nobody does."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.leader())
        pipe.pttl(keys.leader())
        value, ttl = await pipe.execute()
    if value is None or ttl is None or ttl < 0:
        return {"id": None, "pid": None, "expires_at": None}
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = {"id": str(value), "pid": None}
    expires = now + timedelta(milliseconds=ttl)
    return {"id": parsed.get("id"), "pid": parsed.get("pid"), "expires_at": expires}
