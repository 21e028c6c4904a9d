"""The live page over server-sent events in a real headless Chromium: its fallback when websockets
cannot get through, and the browser's own EventSource reconnect resuming after Last-Event-ID.
"""

import asyncio

from playwright.async_api import BrowserContext, Page, Request, expect

from notifications.publishing.log import seq_from_cursor
from stack.services import DaphneInstance
from tests.fixtures_web import PUSH_DEADLINE_MS, artifact, load
from tests.live import LiveApi

# What a proxy that strips `Upgrade` looks like to a page: every websocket handshake fails.
BROKEN_WEBSOCKETS = """
window.WebSocket = class BrokenWebSocket extends EventTarget {
  constructor(url) {
    super();
    this.url = String(url);
    this.readyState = 3;
    window.brokenHandshakes = (window.brokenHandshakes || 0) + 1;
    setTimeout(() => {
      this.dispatchEvent(new Event("error"));
      this.dispatchEvent(new CloseEvent("close", { code: 1006 }));
    }, 20);
  }
  send() {}
  close() {}
};
window.WebSocket.OPEN = 1;
"""


# Every `next` event the page's EventSource delivers, as (lastEventId, the cursor in its data): the
# page merges blogs by id, so only this shows a duplicate.
RECORDED_EVENTS = """
window.sseEvents = [];
window.EventSource = class RecordedEventSource extends window.EventSource {
  constructor(...args) {
    super(...args);
    this.addEventListener("next", (event) => {
      const change = (JSON.parse(event.data).data || {}).blogChanged;
      window.sseEvents.push([event.lastEventId, change ? change.cursor : null]);
    });
  }
};
"""


async def open_page(browser: BrowserContext, url: str, *, break_websockets: bool = False) -> tuple[Page, list[str]]:
    page = await browser.new_page()
    await page.add_init_script(RECORDED_EVENTS)
    if break_websockets:
        await page.add_init_script(BROKEN_WEBSOCKETS)
    event_streams: list[str] = []

    def record(request: Request) -> None:
        if request.resource_type == "eventsource":
            event_streams.append(request.url)

    page.on("request", record)
    await load(page, url)
    return page, event_streams


async def test_without_websockets_the_live_page_falls_back_to_server_sent_events(browser, web_server):
    api = LiveApi(web_server.url)
    username, token = api.sign_up()
    api.create_blog(token, "Written before the page opened")
    page, event_streams = await open_page(browser, f"{web_server.url}/?author={username}", break_websockets=True)
    try:
        status = page.locator("#status")
        await expect(status).to_have_attribute("data-state", "live", timeout=15_000)
        await expect(status).to_have_attribute("data-transport", "sse")
        assert await page.evaluate("window.brokenHandshakes") >= 2  # it tried websockets first
        assert event_streams and "/graphql/?query=" in event_streams[0]

        created = await asyncio.to_thread(api.create_blog, token, "Pushed over SSE")
        item = page.locator(f'.blog[data-id="{created["id"]}"]')
        await expect(item).to_be_visible(timeout=PUSH_DEADLINE_MS)
        assert await item.get_attribute("data-received-at")  # pushed, not read with the list
        titles = await page.locator(".blog h2").all_inner_texts()
        assert titles == ["Pushed over SSE", "Written before the page opened"]
        await page.screenshot(path=artifact("live-page-sse.png"), full_page=True)
    finally:
        await page.close()


async def test_the_browsers_eventsource_reconnect_resumes_after_last_event_id_once_and_in_order(
    browser, restartable_server: DaphneInstance, daphne_server: DaphneInstance
):
    api = LiveApi(daphne_server.url)  # writes go to another instance, which stays up
    username, token = api.sign_up()
    page, event_streams = await open_page(browser, f"{restartable_server.url}/?author={username}&transport=sse")
    try:
        status = page.locator("#status")
        await expect(status).to_have_attribute("data-state", "live")
        await expect(status).to_have_attribute("data-transport", "sse")
        pushed = await asyncio.to_thread(api.create_blog, token, "Pushed before the crash")
        await expect(page.locator(f'.blog[data-id="{pushed["id"]}"]')).to_be_visible()

        await asyncio.to_thread(restartable_server.kill)
        await expect(status).to_have_attribute("data-state", "reconnecting")
        missed = [await asyncio.to_thread(api.create_blog, token, f"Missed {n}") for n in range(3)]
        await asyncio.to_thread(restartable_server.start)

        # The browser reconnected the same EventSource itself: no new list read, no new URL.
        await expect(status).to_have_attribute("data-state", "live", timeout=30_000)
        for blog in missed:
            item = page.locator(f'.blog[data-id="{blog["id"]}"]')
            await expect(item).to_be_visible()
            assert await item.get_attribute("data-received-at")
        titles = await page.locator(".blog h2").all_inner_texts()
        assert titles == ["Missed 2", "Missed 1", "Missed 0", "Pushed before the crash"]
        assert len(set(event_streams)) == 1, event_streams
        # Each event once, in order, its id its cursor: the reconnect resumed after Last-Event-ID.
        events = await page.evaluate("window.sseEvents")
        assert [event_id for event_id, _ in events] == [cursor for _, cursor in events]
        assert [seq_from_cursor(cursor) for _, cursor in events] == sorted({seq_from_cursor(c) for _, c in events})
        assert len(events) == 4, events
    finally:
        await page.close()
