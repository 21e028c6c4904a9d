from pathlib import Path

from graphql import build_schema, print_schema

from project.schema import schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_checked_in_schema_matches_the_live_schema():
    """schema.graphql is the public contract; regenerate it with `make schema` when you mean to change it."""
    checked_in = print_schema(build_schema(SCHEMA_FILE.read_text()))
    live = print_schema(schema.graphql_schema)
    assert checked_in == live, "The schema drifted from schema.graphql: review the change, then run `make schema`."


def test_public_names_are_kept():
    sdl = SCHEMA_FILE.read_text()
    for fragment in (
        "blogs(",
        "blogPublished(",
        "type BlogPublished",
        "cursor: String!",
        "createAuthor(input: CreateAuthorInput!)",
        "createToken(input: CreateTokenInput!)",
        "createBlog(input: CreateBlogInput!)",
        "updateBlog(input: UpdateBlogInput!)",
        "deleteBlog(input: DeleteBlogInput!)",
        "publishedAt: DateTime!",
        "viewer: Author",
        "blogChanged(",
        "type BlogChange {",
        "enum BlogChangeKind",
        "blogId: ID!",
        "changedAt: DateTime!",
    ):
        assert fragment in sdl, fragment
