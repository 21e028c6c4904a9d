"""Parsed and validated GraphQL documents, kept once per distinct text and bounded in bytes.

Clients send the same few documents over and over, on HTTP and websockets alike, and parsing
and validating one costs more than most resolvers behind it. A parsed document is never mutated, so one
serves every request, thread and socket that sends the same text. Only documents that passed
every check that depends on the text alone are kept, and the cache is bounded by what its
entries hold in memory, not by their number: a flood of large distinct documents evicts older
entries instead of growing the process.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode

from core.lru import CostBoundedLRU

# A parsed document holds its token list and AST nodes: a few hundred bytes per token
# (tests/test_documents.py checks this estimate stays above what graphql-core really allocates).
BYTES_PER_TOKEN = 800
BYTES_PER_CHARACTER = 2


@dataclass(frozen=True)
class Prepared:
    """What a document's text alone decides: its errors, or the document and chosen operation."""

    errors: tuple[GraphQLError, ...] = ()
    document: DocumentNode | None = None
    operation: OperationDefinitionNode | None = None
    # What other modules derive from the document alone, computed once per cached document.
    memo: dict[str, Any] = field(default_factory=dict, compare=False)


def estimated_bytes(text: str, document: DocumentNode) -> int:
    """About what keeping `document` (parsed from `text`) costs, erring on the high side."""
    tokens = 0
    token = document.loc.start_token if document.loc else None
    while token is not None:
        tokens += 1
        token = token.next
    return BYTES_PER_CHARACTER * len(text) + BYTES_PER_TOKEN * tokens


class PreparedDocuments(CostBoundedLRU[Hashable, Prepared]):
    """Prepared documents by text, together under `budget` estimated bytes."""
