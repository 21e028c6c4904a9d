"""The prepared-document cache: bounded by bytes, and its size estimate errs on the high side."""

import secrets
import tracemalloc

import pytest
from graphql import parse

from api import validation
from api.documents import Prepared, PreparedDocuments, estimated_bytes

DOCUMENTS = [
    "subscription L($a: String, $b: String) { blogPublished(author: $a, after: $b) { cursor blog { id title } } }",
    "query { " + " ".join(f"a{i}: viewer {{ username }}" for i in range(400)) + " }",
    "query { viewer { " + " ".join(f"f{i}" for i in range(1990)) + " } }",
    "query { viewer { username } } # " + "x" * 19_000,
    'query { viewer(a: "' + "x" * 19_900 + '") { username } }',
    "query Q($first: Int) { blogs(first: $first) { edges { node { id title author { username } } } } }",
]


@pytest.mark.parametrize("text", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_the_estimate_covers_what_graphql_core_allocates(text):
    """Fails if a graphql-core release makes parsed documents bigger than api/documents.py assumes."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        document = parse(text)
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert estimated_bytes(text, document) >= allocated


def test_the_cache_stays_under_its_budget_and_evicts_the_least_recently_used():
    cache = PreparedDocuments(budget=1000)
    for key in "abcd":
        cache.put(key, Prepared(), 300)
    assert cache.bytes == 900 and len(cache) == 3 and cache.get("a") is None
    assert cache.get("b") is not None  # now the most recently used
    cache.put("e", Prepared(), 300)
    assert cache.get("c") is None and cache.get("b") is not None
    cache.put("huge", Prepared(), 1001)  # larger than the whole budget: never kept
    assert cache.get("huge") is None and cache.bytes <= 1000


def test_refused_documents_are_never_cached(settings):
    settings.GRAPHQL_MAX_DOCUMENT_CHARS = 100
    before = len(validation.DOCUMENTS)
    for i in range(20):
        assert validation.check("query { viewer { username } } #" + "x" * (200 + i)).errors  # too long
        assert validation.check(f"query {{ nope{i} }}").errors == []  # invalid: left to the executor
    assert len(validation.DOCUMENTS) == before
    kept = f"query Kept{secrets.token_hex(4)} {{ viewer {{ username }} }}"
    assert validation.check(kept).prepared is not None
    assert len(validation.DOCUMENTS) == before + 1
