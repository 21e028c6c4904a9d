"""The GraphQL-over-HTTP spec's rules for /graphql/: which media type answers, with which status.

The spec is graphql/graphql-over-http (spec/GraphQLOverHTTP.md) as graphql-http's `auditServer`
checks it; docs/http.md has the tables. A GraphQL response goes out in one of three formats:

- `application/graphql-response+json` to a client that names it in `Accept`: 200 when the
  response holds `data`, 400 for a request error (parse, validation, limits, variable coercion);
- `application/json` to a client that names it: 200 for every well-formed request;
- "unspecified": no `Accept`, or only wildcards (curl, httpx and most HTTP libraries send
  `*/*`): `application/json` with graphene-django's own codes (400 for request errors), which is
  what clients that never name a media type rely on.

A request that is not a well-formed GraphQL-over-HTTP request (wrong parameter types) gets 400
in every format, labelled `application/json`, as graphql-http's reference server does. An
`Accept` that allows none of these (nor `text/html` while GraphiQL is on) gets 406.

Subscriptions also run over HTTP (docs/http.md, notifications/transports/streams.py): as a graphql-sse
event stream to a request whose `Accept` names `text/event-stream`, and as Apollo's multipart
response to a POST whose `Accept` names `multipart/mixed` with `subscriptionSpec=1.0`
(`stream_for`). A client that accepts only `text/event-stream` gets every other answer as the
graphql-sse protocol says: one `next` event with the result (errors included) and `complete`.
"""

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from graphql import GraphQLError

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
HTML = "text/html"
EVENT_STREAM = "text/event-stream"
MULTIPART_MIXED = "multipart/mixed"
# The HTTP subscription streams, by the protocol name metrics and logs give them.
SSE = "graphql-sse"
MULTIPART = "multipart-http"
MULTIPART_BOUNDARY = "graphql"


@dataclass(frozen=True)
class ResponseFormat:
    """How a GraphQL response is labelled, and the status of one that failed before execution."""

    name: str
    content_type: str
    request_error_status: int

    def status(self, *, has_data: bool, well_formed: bool) -> int:
        """The HTTP status of a GraphQL response (graphene-django omits `data` on request errors)."""
        if has_data:
            return 200
        return self.request_error_status if well_formed else 400

    def content_type_for(self, *, well_formed: bool) -> str:
        return self.content_type if well_formed else UNSPECIFIED.content_type


GRAPHQL_RESPONSE = ResponseFormat("graphql-response+json", f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8", 400)
APPLICATION_JSON = ResponseFormat("json", f"{JSON}; charset=utf-8", 200)
UNSPECIFIED = ResponseFormat("unspecified", JSON, 400)  # graphene-django's own answer, unchanged
# graphql-sse: errors before execution are reported through an accepted event stream.
EVENT_STREAM_RESPONSE = ResponseFormat("event-stream", f"{EVENT_STREAM}; charset=utf-8", 200)


class _Range(NamedTuple):
    type: str
    subtype: str
    q: float
    charset: str | None
    position: int
    parameters: dict[str, str]  # the others, names lower-cased, values unquoted


class _Match(NamedTuple):
    q: float
    exact: bool  # named outright, not only through a wildcard
    position: int


def _parse_accept(header: str) -> list[_Range]:
    """Media ranges of an Accept header (RFC 9110 §12.5.1); malformed elements are skipped."""
    ranges = []
    for position, element in enumerate(header.split(",")):
        media_range, *parameters = (part.strip() for part in element.split(";"))
        if not media_range:
            continue
        if media_range == "*":  # old Java clients send a bare "*"
            media_range = "*/*"
        type_, _, subtype = media_range.lower().partition("/")
        if not type_ or not subtype:
            continue
        q, charset, others = 1.0, None, {}
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"').lower()
            if key == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0  # an unreadable weight accepts nothing rather than everything
            elif key == "charset":
                charset = value
            else:
                others[key] = value.strip("'")
        ranges.append(_Range(type_, subtype, q, charset, position, others))
    return ranges


def _match(ranges: list[_Range], media_type: str) -> _Match | None:
    """The most specific range that covers `media_type` (it decides the weight), if any does."""
    type_, _, subtype = media_type.partition("/")
    best: tuple[int, _Range] | None = None
    for candidate in ranges:
        if candidate.charset not in (None, "utf-8", "utf8"):
            continue  # every response here is UTF-8
        if candidate.type == type_ and candidate.subtype == subtype:
            specificity = 2
        elif candidate.type == type_ and candidate.subtype == "*":
            specificity = 1
        elif candidate.type == "*" and candidate.subtype == "*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, candidate)
    if best is None:
        return None
    specificity, chosen = best
    return _Match(chosen.q, specificity == 2, chosen.position)


def response_format(accept: str | None) -> ResponseFormat | None:
    """The format a GraphQL response to this `Accept` header takes; None when it accepts neither JSON type.

    Between the two JSON types a client names, the higher weight wins, then the one listed first
    (as graphql-http's reference server decides). `application/graphql-response+json` is only
    sent to clients that name it.
    """
    ranges = _parse_accept(accept or "")
    if not ranges:
        return UNSPECIFIED
    graphql_response, json_ = _match(ranges, GRAPHQL_RESPONSE_JSON), _match(ranges, JSON)
    named = [
        (match, response)
        for match, response in ((graphql_response, GRAPHQL_RESPONSE), (json_, APPLICATION_JSON))
        if match is not None and match.exact and match.q > 0
    ]
    if named:
        return max(named, key=lambda entry: (entry[0].q, -entry[0].position))[1]
    if json_ is not None and json_.q > 0:
        return UNSPECIFIED
    if graphql_response is not None and graphql_response.q > 0:
        return GRAPHQL_RESPONSE
    return None


def stream_for(accept: str | None, method: str) -> str | None:
    """The HTTP subscription stream a request asks for, if any: SSE or MULTIPART.

    SSE when `Accept` names `text/event-stream` (a wildcard is not enough: curl's `*/*` wants
    JSON), Apollo's multipart for a POST naming `multipart/mixed` with `subscriptionSpec` 1.0
    (quoted or not) and no boundary but ours. Between both, the higher weight, then the first listed.
    """
    candidates = []
    for candidate in _parse_accept(accept or ""):
        if candidate.q <= 0 or candidate.charset not in (None, "utf-8", "utf8"):
            continue
        if (candidate.type, candidate.subtype) == ("text", "event-stream"):
            candidates.append((candidate.q, -candidate.position, SSE))
        elif (
            (candidate.type, candidate.subtype) == ("multipart", "mixed")
            and method == "POST"
            and candidate.parameters.get("subscriptionspec", "").startswith("1.0")
            and candidate.parameters.get("boundary", MULTIPART_BOUNDARY) == MULTIPART_BOUNDARY
        ):
            candidates.append((candidate.q, -candidate.position, MULTIPART))
    return max(candidates)[2] if candidates else None


def sse_event(event: str, data: str = "", event_id: str | None = None) -> str:
    """One Server-Sent Event; every line of `data` gets its own `data:` field (the field is always there:
    browsers skip events without one)."""
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in data.split("\n")] if data else ["data: "]
    return "\n".join(lines) + "\n\n"


def sse_result(result_json: str) -> str:
    """A whole GraphQL response as graphql-sse's distinct connections mode streams it: `next`, then `complete`."""
    return sse_event("next", result_json) + sse_event("complete")


def accepts(accept: str | None, media_type: str) -> bool:
    """Whether the `Accept` header allows `media_type` at all (an absent header allows anything)."""
    ranges = _parse_accept(accept or "")
    match = _match(ranges, media_type)
    return not ranges or (match is not None and match.q > 0)


def well_formed(query: Any, variables: Any, operation_name: Any, extensions: Any) -> bool:
    """A well-formed GraphQL-over-HTTP request: the parameters have the spec's types.

    api/validation.py words the errors for query, variables and operationName (the websocket
    sends them too); this only tells a malformed request from a GraphQL request error.
    """
    return (
        isinstance(query, str)
        and (variables is None or isinstance(variables, dict))
        and (operation_name is None or isinstance(operation_name, str))
        and (extensions is None or isinstance(extensions, dict))
    )


def extensions_parameter(raw: Any) -> Any:
    """The `extensions` parameter as sent: a JSON body's value, or the JSON text of a GET's or a form's."""
    if isinstance(raw, str):
        if not raw:
            return None  # the spec: an empty optional parameter is an absent one
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return raw  # not a map: refused like any other
    return raw


def extensions_error(extensions: Any) -> GraphQLError | None:
    if extensions is None or isinstance(extensions, dict):
        return None
    return GraphQLError("'extensions' must be an object.", extensions={"code": "BAD_USER_INPUT"})
