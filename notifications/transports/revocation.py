"""Authority follows the connection: when a credential ends, every socket signed in with it closes.

A websocket (or an HTTP stream) signs in once and may stay open for days. Three things keep it
from outliving its credential:

- Announcement: api.signals.access_ended (sent for every way access ends, api/access.py) is
  turned, after the commit, into one channel-layer message to one group every process joins. A
  failed send is logged and counted; the revocation stays committed.
- Listening: each process keeps one channel in that group (started by its first signed-in
  connection) and closes its own connections that match by token, author or browser session:
  websockets with 4403 and a reason a person can read, HTTP streams with an UNAUTHENTICATED
  ending. After losing the channel layer (an announcement may have been missed), and every
  AUTH_RECHECK_SECONDS (one whose sending failed), it rechecks every signed-in connection of
  the process against the database, in two queries.
- Expiry: a signed-in connection gets a timer for its token's expiry and closes when it fires.

Nothing here runs per event or per subscriber: one message per revocation per process, one
timer per signed-in connection. The per-write check (one query when a mutation arrives on a
signed-in socket) lives with the transports: it holds even on a process that missed a message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from api.selectors import Credential, credential_problems
from api.signals import DEACTIVATED, DELETED, EXPIRED, REVOKED, SIGNED_OUT, AccessEnded, access_ended
from core import metrics
from notifications.publishing.events import UNREACHABLE

logger = logging.getLogger(__name__)

GROUP = "auth.revocations"
MESSAGE_TYPE = "access.ended"
ACCESS_ENDED_CLOSE = 4403
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 1.0
# What a person reads in the close frame (at most 123 bytes) or at the end of a stream.
REASON_TEXT = {
    REVOKED: "Token revoked",
    EXPIRED: "Token expired",
    DEACTIVATED: "Account deactivated",
    DELETED: "Account deleted",
    SIGNED_OUT: "Signed out",
}


def reason_text(reason: str) -> str:
    """`Forbidden: <what happened>: reconnect without a token or with a new one`."""
    what = REASON_TEXT.get(reason, "Sign-in ended")
    return f"Forbidden: {what}: reconnect without a token or with a new one"


class SignedIn(Protocol):
    """A connection that signed in: a websocket or an HTTP stream."""

    @property
    def protocol_name(self) -> str: ...

    def access_ended(self, reason: str) -> None:
        """Its credential ended: close it (once) so that it can do nothing more as that author."""


# ---------------------------------------------------------------------------- this process's sign-ins


class SignIns:
    """Every signed-in connection of this process, found by token, author and session."""

    def __init__(self) -> None:
        self.credentials: weakref.WeakKeyDictionary[SignedIn, Credential] = weakref.WeakKeyDictionary()
        self.timers: weakref.WeakKeyDictionary[SignedIn, asyncio.TimerHandle] = weakref.WeakKeyDictionary()
        self.by_token: dict[int, weakref.WeakSet[SignedIn]] = {}
        self.by_author: dict[int, weakref.WeakSet[SignedIn]] = {}
        self.by_session: dict[str, weakref.WeakSet[SignedIn]] = {}

    def _indexes(self, credential: Credential) -> Iterable[tuple[dict[Any, weakref.WeakSet[SignedIn]], Any]]:
        if credential.token_id is not None:
            yield self.by_token, credential.token_id
        yield self.by_author, credential.author.pk
        if credential.session_key is not None:
            yield self.by_session, credential.session_key

    def add(self, connection: SignedIn, credential: Credential) -> None:
        self.remove(connection)
        self.credentials[connection] = credential
        for index, key in self._indexes(credential):
            index.setdefault(key, weakref.WeakSet()).add(connection)
        if credential.expires_at is not None:
            delay = max(0.0, (credential.expires_at - timezone.now()).total_seconds())
            self.timers[connection] = asyncio.get_running_loop().call_later(delay, _expired, connection)

    def remove(self, connection: SignedIn) -> Credential | None:
        timer = self.timers.pop(connection, None)
        if timer is not None:
            timer.cancel()
        credential = self.credentials.pop(connection, None)
        if credential is not None:
            for index, key in self._indexes(credential):
                members = index.get(key)
                if members is not None:
                    members.discard(connection)
                    if not members:
                        del index[key]
        return credential

    def matching(self, ended: AccessEnded) -> set[SignedIn]:
        found: set[SignedIn] = set()
        for token_id in ended.token_ids:
            found.update(self.by_token.get(token_id, ()))
        for author_id in ended.author_ids:
            found.update(self.by_author.get(author_id, ()))
        for session_key in ended.session_keys:
            found.update(self.by_session.get(session_key, ()))
        return found

    def __len__(self) -> int:
        return len(self.credentials)


_sign_ins = SignIns()


def sign_in(connection: SignedIn, credential: Credential) -> None:
    """`connection` acts as `credential` from now on, until end_access or its expiry closes it."""
    _sign_ins.add(connection, credential)
    listener().ensure_running()


def forget(connection: SignedIn) -> Credential | None:
    """The connection is closing (or signed out): no timer, no index entry left behind."""
    return _sign_ins.remove(connection)


def credential_of(connection: SignedIn) -> Credential | None:
    return _sign_ins.credentials.get(connection)


def end_access(ended: AccessEnded) -> int:
    """Close this process's connections signed in with what `ended` names; how many there were."""
    closing = _sign_ins.matching(ended)
    for connection in closing:
        close(connection, ended.reason)
    if closing:
        logger.info(
            "Closed %d signed-in connection(s): %s",
            len(closing),
            ended.reason,
            extra={"event": "access_ended", "reason": ended.reason, "connections": len(closing)},
        )
    return len(closing)


def _expired(connection: SignedIn) -> None:
    logger.info("Closing a connection whose token expired", extra={"event": "access_ended", "reason": EXPIRED})
    close(connection, EXPIRED)


def close(connection: SignedIn, reason: str) -> None:
    """End one signed-in connection because its credential ended (`reason`), once."""
    if forget(connection) is None:
        return  # closed already
    metrics.connection_signed_out(reason, connection.protocol_name)
    try:
        connection.access_ended(reason)
    except Exception:
        logger.exception("Closing a signed-in connection (%s) failed", reason)


# ---------------------------------------------------------------------------- announcing (any process)


@receiver(access_ended, dispatch_uid="broadcast_access_ended")
def broadcast_after_commit(sender: Any, ended: AccessEnded, **kwargs: Any) -> None:
    transaction.on_commit(lambda: broadcast(ended))


def broadcast(ended: AccessEnded) -> None:
    """One message to every process; a failure is logged and counted, never raised (it is committed)."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        async_to_sync(layer.group_send)(GROUP, {"type": MESSAGE_TYPE, "payload": _encode(ended)})
    except UNREACHABLE as error:
        metrics.revocation_broadcast(failed=True)
        logger.error(
            "Announcing ended credentials (%s) failed, the channel layer is unreachable (%s: %s); their "
            "sockets' writes are refused, and instances close them at their next recheck (AUTH_RECHECK_SECONDS)",
            ended.reason,
            type(error).__name__,
            error,
        )
    except Exception:
        metrics.revocation_broadcast(failed=True)
        logger.exception("Announcing ended credentials (%s) failed", ended.reason)
    else:
        metrics.revocation_broadcast(failed=False)


def _encode(ended: AccessEnded) -> dict[str, Any]:
    return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(ended).items()}


def _decode(payload: dict[str, Any]) -> AccessEnded:
    return AccessEnded(
        reason=str(payload["reason"]),
        token_ids=tuple(int(i) for i in payload.get("token_ids") or ()),
        author_ids=tuple(int(i) for i in payload.get("author_ids") or ()),
        session_keys=tuple(str(k) for k in payload.get("session_keys") or ()),
    )


# ---------------------------------------------------------------------------- listening (each process)


class Listener:
    """This process's channel in GROUP: every announcement closes what it names here.

    channels-redis forgets a group's members after `group_expiry` and when Redis restarts empty,
    so membership is renewed; after any failure to receive, the channel rejoins and every
    signed-in connection of the process is checked against the database (announcements sent
    meanwhile never arrive).
    """

    def __init__(self) -> None:
        self.layer: Any = None
        self.channel = ""
        self.task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self.task is not None and not self.task.done():
            return
        self.layer = get_channel_layer()
        if self.layer is not None:
            self.task = asyncio.ensure_future(self._run())

    async def _join(self) -> None:
        if not self.channel:
            self.channel = await self.layer.new_channel()
        await self.layer.group_add(GROUP, self.channel)

    async def _run(self) -> None:
        renewing = asyncio.ensure_future(self._renew())
        rechecking = asyncio.ensure_future(self._recheck_every(float(settings.AUTH_RECHECK_SECONDS)))
        failures = 0
        try:
            while True:
                try:
                    await self._join()
                    # Sockets that signed in before this membership existed may have missed theirs.
                    await recheck()
                    failures = 0
                    while True:
                        self._received(await self.layer.receive(self.channel))
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    failures += 1
                    delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2**failures) * random.uniform(0.5, 1.0)
                    logger.warning(
                        "Revocations cannot be received (%s: %s); retrying in %.1fs", type(error).__name__, error, delay
                    )
                    await asyncio.sleep(delay)
        finally:
            renewing.cancel()
            rechecking.cancel()

    def _received(self, message: dict[str, Any]) -> None:
        if message.get("type") != MESSAGE_TYPE:
            return
        try:
            ended = _decode(message["payload"])
        except (KeyError, TypeError, ValueError) as error:
            logger.error("Unreadable %s message (%s); rechecking every signed-in connection", MESSAGE_TYPE, error)
            raise
        end_access(ended)

    async def _recheck_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await recheck()
            except Exception as error:  # the database down: the next round, or the writes' own check
                logger.warning("Rechecking signed-in connections failed: %s: %s", type(error).__name__, error)

    async def _renew(self) -> None:
        interval = max(0.5, min(60.0, float(getattr(self.layer, "group_expiry", 86400)) / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._join()
            except Exception as error:
                logger.warning("Could not renew the membership of %s: %s: %s", GROUP, type(error).__name__, error)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def recheck() -> int:
    """Check every signed-in connection of this process against the database; close those that ended.

    Runs when the channel-layer membership is (re)made (announcements may have been lost
    meanwhile) and every AUTH_RECHECK_SECONDS (an announcement whose sending failed): two
    queries for the whole process (selectors.credential_problems), not one per event or socket.
    """
    distinct: dict[Credential, list[SignedIn]] = {}
    for connection, credential in list(_sign_ins.credentials.items()):
        distinct.setdefault(credential, []).append(connection)
    if not distinct:
        return 0
    problems = await database_sync_to_async(credential_problems)(list(distinct))
    closed = 0
    for credential, reason in problems.items():
        for connection in distinct[credential]:
            close(connection, reason)
            closed += 1
    if closed:
        logger.warning("Closed %d connection(s) whose sign-in ended while announcements could not arrive", closed)
    return closed


_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Listener] = weakref.WeakKeyDictionary()


def listener() -> Listener:
    """The running event loop's listener (one per process under Daphne)."""
    loop = asyncio.get_running_loop()
    found = _listeners.get(loop)
    if found is None:
        found = _listeners[loop] = Listener()
    return found
