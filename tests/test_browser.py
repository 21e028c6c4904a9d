"""What a person sees: the live page and GraphiQL in a real headless Chromium, against a
DEBUG-off Daphne serving its collected static files. Screenshots go to test-artifacts/.
"""

import asyncio
import json
import time
from urllib.parse import quote, urlsplit

from playwright.async_api import expect

from stack.services import DaphneInstance
from tests.fixtures_web import GRAPHIQL_READY, GRAPHIQL_SUBSCRIPTION, PUSH_DEADLINE_MS, artifact, open_page
from tests.live import LATEST_CURSOR, LiveApi, assert_no_errors


def off_site(requested: list[str], server: DaphneInstance) -> list[str]:
    return [url for url in requested if urlsplit(url).netloc != f"127.0.0.1:{server.port}"]


async def test_live_page_shows_a_new_blog_within_a_second_without_reload(browser, web_server):
    api = LiveApi(web_server.url)
    username, token = api.sign_up()
    api.create_blog(token, "Written before the page opened")
    page, requested = await open_page(browser, f"{web_server.url}/?author={username}")
    try:
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        await expect(page.locator(".blog h2")).to_have_text(["Written before the page opened"])
        await page.evaluate("window.notReloaded = true")

        sent = time.time()
        created = await asyncio.to_thread(api.create_blog, token, "Pushed to the page", "Seen without a reload.")
        answered = time.time()
        item = page.locator(f'.blog[data-id="{created["id"]}"]')
        await expect(item).to_be_visible(timeout=PUSH_DEADLINE_MS + (answered - sent) * 1000)
        received_at = int(await item.get_attribute("data-received-at") or 0) / 1000
        print(f"\nblog on the page {(received_at - sent) * 1000:.0f} ms after the mutation was sent")

        await expect(item).to_contain_text("Pushed to the page")
        await expect(item).to_contain_text(f"by {username}")
        titles = await page.locator(".blog h2").all_inner_texts()
        assert titles == ["Pushed to the page", "Written before the page opened"]
        assert await page.evaluate("window.notReloaded") is True
        assert off_site(requested, web_server) == []
        await page.screenshot(path=artifact("live-page.png"), full_page=True)
    finally:
        await page.close()


async def test_live_page_reconnects_after_a_crash_and_shows_what_it_missed_once(
    browser, restartable_server, daphne_server
):
    api = LiveApi(daphne_server.url)  # writes go to another instance, which stays up
    username, token = api.sign_up()
    page, _ = await open_page(browser, f"{restartable_server.url}/?author={username}")
    try:
        status = page.locator("#status")
        await expect(status).to_have_attribute("data-state", "live")
        pushed = await asyncio.to_thread(api.create_blog, token, "Pushed before the crash")
        await expect(page.locator(f'.blog[data-id="{pushed["id"]}"]')).to_be_visible()

        await asyncio.to_thread(restartable_server.kill)
        await expect(status).to_have_attribute("data-state", "reconnecting")
        missed = await asyncio.to_thread(api.create_blog, token, "Published while the page was cut off")
        await asyncio.to_thread(restartable_server.start)

        # Reconnected: it resumed after the last cursor it saw, and the server replayed the missed blog.
        await expect(status).to_have_attribute("data-state", "live", timeout=30_000)
        missed_item = page.locator(f'.blog[data-id="{missed["id"]}"]')
        await expect(missed_item).to_be_visible()
        assert await missed_item.get_attribute("data-received-at")  # pushed (replayed), not re-read
        titles = await page.locator(".blog h2").all_inner_texts()
        assert titles == ["Published while the page was cut off", "Pushed before the crash"]
        await page.screenshot(path=artifact("live-page-after-reconnect.png"), full_page=True)
    finally:
        await page.close()


async def test_graphiql_runs_a_subscription_offline(browser, web_server):
    api = LiveApi(web_server.url)
    username, token = api.sign_up()
    # Subscribing after the latest cursor makes the test independent of when the server registers it.
    latest = assert_no_errors(api.post(LATEST_CURSOR))["latestCursor"]
    variables = json.dumps({"author": username, "after": latest})
    url = f"{web_server.url}/graphql/#query={quote(GRAPHIQL_SUBSCRIPTION)}&variables={quote(variables)}"
    page, requested = await open_page(browser, url, GRAPHIQL_READY)
    try:
        await page.locator(".graphiql-execute-button").click()
        await asyncio.to_thread(api.create_blog, token, "Seen in GraphiQL")
        response = page.locator(".graphiql-response")
        await expect(response).to_contain_text("Seen in GraphiQL")
        await expect(response).to_contain_text(username)
        # Every script, stylesheet and the websocket came from this server: it works offline.
        assert any(url.endswith("/static/graphiql/graphiql.min.js") for url in requested)
        assert any(url.startswith(f"ws://127.0.0.1:{web_server.port}/graphql/") for url in requested)
        assert off_site(requested, web_server) == []
        await page.screenshot(path=artifact("graphiql-subscription.png"))
    finally:
        await page.close()


async def test_live_page_applies_an_edit_in_place_and_removes_a_deletion_without_reload(browser, web_server):
    api = LiveApi(web_server.url)
    username, token = api.sign_up()
    kept = api.create_blog(token, "Kept as it is")
    edited = api.create_blog(token, "Before the edit", "Old text")
    deleted = api.create_blog(token, "About to be deleted")
    page, _ = await open_page(browser, f"{web_server.url}/?author={username}")
    try:
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        titles = page.locator(".blog h2")
        await expect(titles).to_have_text(["About to be deleted", "Before the edit", "Kept as it is"])
        await page.evaluate("window.notReloaded = true")

        update = (
            "mutation U($id: ID!, $t: String, $c: String) "
            "{ updateBlog(input: {id: $id, title: $t, content: $c}) { blog { id } } }"
        )
        delete = "mutation D($id: ID!) { deleteBlog(input: {id: $id}) { deletedId } }"
        changes = {"id": edited["id"], "t": "After the edit", "c": "New text"}
        assert_no_errors(await asyncio.to_thread(api.post, update, changes, token))
        item = page.locator(f'.blog[data-id="{edited["id"]}"]')
        await expect(item.locator("h2")).to_have_text("After the edit", timeout=PUSH_DEADLINE_MS * 3)
        await expect(item.locator(".content")).to_have_text("New text")
        assert await item.get_attribute("data-edited-at")

        assert_no_errors(await asyncio.to_thread(api.post, delete, {"id": deleted["id"]}, token))
        await expect(page.locator(f'.blog[data-id="{deleted["id"]}"]')).to_have_count(0, timeout=PUSH_DEADLINE_MS * 3)
        await expect(titles).to_have_text(["After the edit", "Kept as it is"])  # in place, order kept
        assert await page.locator(f'.blog[data-id="{kept["id"]}"]').get_attribute("data-edited-at") is None
        assert await page.evaluate("window.notReloaded") is True
        await page.screenshot(path=artifact("live-page-edit-and-delete.png"), full_page=True)
    finally:
        await page.close()
