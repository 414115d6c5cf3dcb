"""The leader lease: one key that at most one worker holds, renewed by its holder only.

Acquire, renew and release are Lua scripts that act only on a free key or one that still holds
this worker's VALUE (which carries a random token), so a worker that was paused past its lease
can neither extend nor delete its successor's. Acquire also takes back a lease that is still
this worker's: a holder that lost sight of Redis for a moment (an outage, a Sentinel failover
that carried the key to the new master) renews it at once instead of waiting for its own key
to expire and leaving the charts leaderless in between.
Leadership only saves duplicate work: every time move is a chart transaction of its own.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from stateservice.store import keys

ACQUIRE = """
-- KEYS[1] = the lease key / ARGV[1] = this holder's value / ARGV[2] = ttl in milliseconds
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""

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
        self._acquire = redis.register_script(ACQUIRE)
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it, or take it back (with a fresh TTL) if this worker still does."""
        return bool(await self._acquire(keys=[keys.leader()], args=[self.value, self.ttl_ms]))

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
