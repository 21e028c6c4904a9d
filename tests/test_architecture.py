"""The layers depend one way: no import circle between the project's modules (scripts/import_graph.py)."""

from scripts.import_graph import circles, graph


def test_no_module_imports_itself_through_others():
    edges = graph()
    assert len(edges) > 100  # the whole tree was read, not an empty folder
    assert circles(edges) == []


def test_a_circle_is_found_when_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
