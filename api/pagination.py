"""Relay pagination as plain arithmetic: cursors, the rows a page needs, and the page itself.

Cursors are graphene-django's (`arrayconnection:<offset>`, base64), so clients keep working.
The rows a request selects follow the Relay specification's algorithm: the cursors narrow the
edges, then `first` keeps the head and `last` the tail. One row past the page is read on the side
the page was cut from, so `hasNextPage` / `hasPreviousPage` need no count: only `last` without
`before` needs the number of rows (the page ends there), and the database gives it in the same
statement for nested connections (api/selectors.py).

Nothing here touches Django or graphene: selectors turn a `Window` into SQL, the schema turns a
`Page` into a connection.
"""

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from api.errors import BadUserInput

PREFIX = "arrayconnection:"
# No connection holds this many rows; a larger offset could only be forged (and would overflow SQL integers).
MAX_OFFSET = 2**62
_OFFSET = re.compile(r"[0-9]{1,19}")

T = TypeVar("T")


def cursor_for(offset: int) -> str:
    return base64.b64encode(f"{PREFIX}{offset}".encode()).decode()


def offset_of(cursor: str) -> int | None:
    """The offset inside a cursor this API gave, or None for anything else."""
    try:
        text = base64.b64decode(cursor.encode("ascii"), validate=True).decode("ascii")
    except (UnicodeError, binascii.Error, ValueError):
        return None
    if not text.startswith(PREFIX) or not _OFFSET.fullmatch(text[len(PREFIX) :]):
        return None
    offset = int(text[len(PREFIX) :])
    return offset if offset <= MAX_OFFSET else None


def cursor_error(argument: str, field: str, cursor: Any) -> str | None:
    """Why `cursor` cannot be `argument` of connection `field`, or None when it can."""
    if cursor is None or (isinstance(cursor, str) and offset_of(cursor) is not None):
        return None
    return (
        f"'{argument}' on '{field}' is not a cursor of this connection: pass an edge's `cursor` or "
        f"`pageInfo.startCursor`/`endCursor` from an earlier page, or leave it out to start from the beginning."
    )


@dataclass(frozen=True)
class Window:
    """A connection's arguments as offsets (0 is the first row in the connection's order)."""

    first: int | None = None
    last: int | None = None
    after: int | None = None
    before: int | None = None

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any], *, field: str, default_first: int) -> "Window":
        """Checked arguments; without first and last, the page is `default_first` long (graphene-django's cap)."""
        offsets = {}
        for name in ("after", "before"):
            error = cursor_error(name, field, arguments.get(name))
            if error is not None:
                raise BadUserInput(error)
            cursor = arguments.get(name)
            offsets[name] = None if cursor is None else offset_of(cursor)
        first, last = arguments.get("first"), arguments.get("last")
        for name, value in (("first", first), ("last", last)):
            if value is not None and value < 0:
                raise BadUserInput(f"'{name}' on '{field}' must not be negative, got {value}.")
        if first is None and last is None:
            first = default_first
        return cls(first=first, last=last, **offsets)

    @property
    def start(self) -> int:
        """The first offset the cursors allow."""
        return 0 if self.after is None else self.after + 1

    @property
    def empty(self) -> bool:
        """True when the cursors alone leave nothing (`before` at or below `after`)."""
        return self.before is not None and self.before <= self.start

    @property
    def stop(self) -> int | None:
        """The offset the rows to read end before, when it is known without counting."""
        stops = []
        if self.before is not None:
            stops.append(self.before)
        if self.first is not None:
            stops.append(self.start + self.first + 1)  # one more row tells whether there is a next page
        return min(stops) if stops else None

    def bounds(self, count: int | None = None) -> tuple[int, int]:
        """The offsets [low, stop) to read; `count` (the number of rows) is needed when `needs_count`."""
        stop = self.stop if self.stop is not None else count
        if stop is None:
            raise ValueError("This window reads from the end: pass the number of rows.")
        low = self.start if self.tail is None else max(self.start, stop - self.tail)
        return low, max(low, stop)

    @property
    def tail(self) -> int | None:
        """How many rows to read from the end of what the cursors allow (`last` without `first`),
        one more than the page to tell whether there is a previous page."""
        return None if self.last is None or self.first is not None else self.last + 1

    @property
    def needs_count(self) -> bool:
        """Whether the rows' offsets depend on how many rows there are (`last` counted from the end)."""
        return self.tail is not None and self.before is None


@dataclass(frozen=True)
class Page(Generic[T]):
    """The rows of one page with their offsets, and whether rows exist beyond it."""

    rows: tuple[tuple[int, T], ...]
    has_previous: bool
    has_next: bool


def page_of(window: Window, rows: Sequence[tuple[int, T]]) -> Page[T]:
    """The page from the rows read for `window` (offsets ascending, at most one past the page per side)."""
    kept = [(offset, row) for offset, row in rows if offset >= window.start]
    if window.before is not None:
        kept = [(offset, row) for offset, row in kept if offset < window.before]
    has_next = has_previous = False
    if window.first is not None:
        has_next = len(kept) > window.first
        kept = kept[: window.first]
    if window.last is not None:
        has_previous = len(kept) > window.last
        kept = kept[len(kept) - window.last :] if window.last else []
    return Page(tuple(kept), has_previous=has_previous, has_next=has_next)
