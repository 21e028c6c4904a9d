"""Who a websocket belongs to before connection_init: its session cookie, when it sends one."""

from typing import Any

from channels.auth import AuthMiddlewareStack


class SessionAuthWhenCookie:
    """Channels' cookie, session and auth middleware, for the connections that carry a cookie.

    A browser on our own pages is signed in by its session cookie. API clients send a bearer
    token in connection_init and no cookie; for them the three middleware layers would only hold
    scope copies and wrappers for as long as each idle connection lives, for an anonymous user.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.with_session: Any = AuthMiddlewareStack(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if any(name == b"cookie" for name, _ in scope.get("headers", ())):
            return await self.with_session(scope, receive, send)
        return await self.inner(scope, receive, send)
