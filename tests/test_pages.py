"""The live page and GraphiQL as served (no browser): local files only, served in both modes."""

import json
import re
import shutil

import httpx
import pytest
from django.test import Client
from graphene_django.views import GraphQLView

from pages.checks import graphiql_assets_present
from scripts import fetch_static_assets
from stack.services import REPO_ROOT
from tests.live import LiveApi, assert_no_errors

VENDOR_FILES = [file for tarball in fetch_static_assets.TARBALLS for file in tarball.files]
ASSET_URL = re.compile(r'(?:src|href)="([^"]+)"')
DEMO_AUTHORS = """
query {
  ada: author(username: "ada") { blogs(first: 10) { edges { node { title } } } }
  alan: author(username: "alan") { username }
}
"""
CREATE_BLOG = (
    'mutation { createBlog(input: {title: "With a demo token", content: "c"}) { blog { author { username } } } }'
)


def graphiql_html(client: Client) -> str:
    response = client.get("/graphql/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    return response.content.decode()


def test_graphiql_loads_every_file_from_this_site(client):
    urls = [url for url in ASSET_URL.findall(graphiql_html(client)) if url != "data:,"]  # the empty favicon
    assert len(urls) == 9  # 2 stylesheets, 6 libraries, graphene-django's own script
    assert all(url.startswith("/static/") for url in urls), urls


def test_graphiql_files_are_the_releases_graphene_django_pins(client):
    """Same versions and hashes as graphene-django's view, so its integrity attributes hold."""
    view = GraphQLView
    pinned = {tarball.name: tarball.version for tarball in fetch_static_assets.TARBALLS}
    assert pinned == {
        "graphiql": view.graphiql_version,
        "react": view.react_version,
        "react-dom": view.react_version,
        "graphql-ws": view.subscriptions_transport_ws_version,
        "@graphiql/plugin-explorer": view.graphiql_plugin_explorer_version,
        "whatwg-fetch": view.whatwg_fetch_version,
    }
    html = graphiql_html(client)
    for file in VENDOR_FILES:
        assert f'integrity="{file.sri}"' in html
        assert fetch_static_assets.is_intact(REPO_ROOT / "static-vendor" / file.target, file.sri), file.target


def test_development_server_serves_them_without_collectstatic(settings):
    """`make run`: DEBUG on, WhiteNoise finds files where they are."""
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True
    client = Client()
    for path in ["graphiql/graphiql.min.js", "graphiql/graphql-ws.min.js", "pages/live.js"]:
        response = client.get(f"/static/{path}")
        assert response.status_code == 200, path
        assert b"".join(response.streaming_content)  # type: ignore[attr-defined]


def test_production_serves_them_after_collectstatic(web_server):
    """DEBUG off: WhiteNoise serves what collectstatic gathered, compressed variants included."""
    for file in VENDOR_FILES:
        response = httpx.get(f"{web_server.url}/static/{file.target}", headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200, file.target
        assert fetch_static_assets.integrity_of(response.content, "sha256") == file.sri
    assert (
        httpx.get(f"{web_server.url}/static/graphiql/graphiql.min.js", headers={"Accept-Encoding": "gzip"}).headers[
            "Content-Encoding"
        ]
        == "gzip"
    )


def test_a_tampered_file_is_not_intact(tmp_path):
    file = VENDOR_FILES[0]
    copy = tmp_path / "copy.js"
    shutil.copy(REPO_ROOT / "static-vendor" / file.target, copy)
    assert fetch_static_assets.is_intact(copy, file.sri)
    copy.write_bytes(copy.read_bytes() + b"\n")
    assert not fetch_static_assets.is_intact(copy, file.sri)


def test_missing_graphiql_files_are_reported_at_startup(settings, tmp_path):
    settings.STATICFILES_DIRS = [tmp_path]
    [warning] = graphiql_assets_present()
    assert warning.id == "pages.W001"
    settings.STATICFILES_DIRS = [REPO_ROOT / "static-vendor"]
    assert graphiql_assets_present() == []


def test_live_page_configures_its_script(client):
    response = client.get("/?author=ada")
    assert response.status_code == 200
    html = response.content.decode()
    config_script = re.search(r'<script id="live-config" type="application/json">(.*?)</script>', html)
    assert config_script is not None
    config = json.loads(config_script.group(1))
    assert config == {"graphqlPath": "/graphql/", "subscriptionPath": "/graphql/", "first": 20, "author": "ada"}
    assert all(url.startswith(("/static/", "/graphql/", "data:")) for url in ASSET_URL.findall(html))
    assert "csrftoken" in response.cookies  # the script sends it back when a session cookie is present


@pytest.mark.parametrize("author", ['"><script>alert(1)</script>', "</script><script>alert(1)</script>"])
def test_live_page_escapes_the_author_filter(client, author):
    html = client.get("/", {"author": author}).content.decode()
    assert "<script>alert(1)</script>" not in html


def test_seed_demo_creates_authors_and_blogs_once_and_prints_working_tokens(run_manage, web_server):
    api = LiveApi(web_server.url)
    first = run_manage("seed_demo").stdout
    second = run_manage("seed_demo").stdout
    assert "5 demo blogs created." in first
    assert "0 demo blogs created." in second
    data = assert_no_errors(api.post(DEMO_AUTHORS))
    assert len(data["ada"]["blogs"]["edges"]) == 2
    assert data["alan"] == {"username": "alan"}
    printed = re.search(r"ada: .*Bearer (\S+)\"", second)
    assert printed is not None
    token = printed.group(1)
    created = assert_no_errors(api.post(CREATE_BLOG, token=token))
    assert created["createBlog"]["blog"]["author"]["username"] == "ada"
