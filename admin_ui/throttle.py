"""Login and 2FA guesses, sign-ups and reset requests, counted in Redis per account and IP.

Counters are fixed windows, shared by every admin UI process. An attempt is counted (INCR)
BEFORE it is evaluated, so N parallel guesses evaluate at most the limit: a count read first
and written after the slow password check would let every one of them through. A right
answer gives its attempt back, so only wrong ones use up the budget.

When Redis is unreachable the check lets the attempt through (logged): a Redis outage must
not stop a user from logging in to delete a leaked key, and argon2 keeps guessing slow anyway.
"""

from __future__ import annotations

import hashlib
import logging

import redis.asyncio as aioredis
from aiohttp import web

from gateway.store.errors import REDIS_ERRORS

__all__ = ["IP_LIMIT_FACTOR", "MAIL_LIMIT", "THROTTLE_KEY", "Throttle"]

log = logging.getLogger(__name__)

# Many users may share one address (an office NAT): the per-IP budget is a few accounts' worth.
IP_LIMIT_FACTOR = 5
# Emails one address or key may be sent per window (sign-up, reset, verify, resend): enough for
# a lost message or two, too few to flood someone's inbox through our forms.
MAIL_LIMIT = 5

# Give an attempt back only while its window lives: a DECR of an expired key would create a
# counter with no expiry, which would then never reset.
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('DECR', key) end
end
return 0
"""


def _digest(identity: str) -> str:
    # Emails are hashed: no address sits in Redis in clear.
    return hashlib.sha256(identity.strip().lower().encode()).hexdigest()[:32]


class Throttle:
    """`take_attempt` before checking a password or code, `give_back` when it was right."""

    def __init__(self, client: aioredis.Redis, prefix: str, limit: int, window: float) -> None:
        self._client = client
        self._prefix = f"{prefix}admin:fail:"
        self._limit = max(1, limit)
        self._window = max(1, int(window))
        self._give_back = client.register_script(_GIVE_BACK)

    def _keys(self, account: str, ip: str) -> tuple[str, str]:
        return f"{self._prefix}acct:{_digest(account)}", f"{self._prefix}ip:{ip}"

    async def _count(self, keys: list[tuple[str, int, int]]) -> int | None:
        """INCR each `(key, limit, window)` at once; the longest wait of those over their
        limit, or None when none is (or Redis is unreachable)."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for key, _, window in keys:
                    # SET NX EX then INCR (which keeps the TTL): the window starts at the first
                    # attempt and later ones do not extend it (EXPIRE NX would need Redis 7).
                    pipe.set(key, 0, ex=window, nx=True)
                    pipe.incr(key)
                    pipe.ttl(key)
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("admin throttle unavailable (redis): %r", exc)
            return None
        waits = [max(1, int(replies[3 * i + 2])) for i, (_, limit, _) in enumerate(keys)
                 if int(replies[3 * i + 1]) > limit]
        return max(waits) if waits else None

    async def take_attempt(self, account: str, ip: str) -> int | None:
        """Count one password or code attempt for `account` from `ip`, before it is checked.

        Seconds to wait when either count is over its limit (the attempt must then not be
        evaluated at all), else None.
        """
        acct_key, ip_key = self._keys(account, ip)
        # SECURITY: counted atomically before the check, so parallel guesses cannot outrun it.
        return await self._count([(acct_key, self._limit, self._window),
                                  (ip_key, self._limit * IP_LIMIT_FACTOR, self._window)])

    async def give_back(self, account: str, ip: str) -> None:
        """The attempt `take_attempt` counted was right: it does not use up the budget."""
        try:
            await self._give_back(keys=list(self._keys(account, ip)))
        except REDIS_ERRORS as exc:
            log.warning("admin throttle unavailable (redis): %r", exc)

    async def take_request(self, kind: str, ip: str, limit: int, window: float) -> int | None:
        """Count one `kind` request (sign-up, reset request) from `ip`; seconds to wait once
        more than `limit` came in `window`, else None."""
        key = f"{self._prefix}{kind}:ip:{ip}"
        return await self._count([(key, max(1, limit), max(1, int(window)))])

    async def allow_mail(self, kind: str, identity: str) -> bool:
        """Count one email of `kind` to `identity`; False once over `MAIL_LIMIT` a window."""
        key = f"{self._prefix}mail:{kind}:{_digest(identity)}"
        return await self._count([(key, MAIL_LIMIT, self._window)]) is None

    async def reset(self, account: str) -> None:
        """After a full login: the account's count starts again (the IP's does not)."""
        acct_key, _ = self._keys(account, "")
        try:
            await self._client.delete(acct_key)
        except REDIS_ERRORS as exc:
            log.warning("admin throttle unavailable (redis): %r", exc)


THROTTLE_KEY: web.AppKey[Throttle] = web.AppKey("throttle", Throttle)
