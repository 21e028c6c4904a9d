/* The live page: the latest blogs over HTTP, every change pushed over graphql-transport-ws.
 *
 * No framework and no build step. It reads the latest blogs together with `latestCursor`, then
 * subscribes with `blogChanged(after: <cursor>)`: the server replays whatever changed in
 * between, so nothing falls into the gap. A new blog is added, an edited one updated in place,
 * a deleted one removed. After a drop it resubscribes after the last cursor it saw and gets
 * what it missed, once and in order. Blogs are merged by id all the same.
 *
 * Where websockets cannot get through (a proxy that strips `Upgrade`, say) while plain HTTP
 * does, it falls back to server-sent events: an EventSource on the same URL (graphql-sse's
 * distinct connections mode, `?query=`). Each event's id is its cursor, so the browser's own
 * reconnect (with `Last-Event-ID`) resumes with no gap. `?transport=sse` starts with it.
 */
"use strict";

(function () {
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_SHOWN = 100;
  const EXCERPT_CHARS = 280;

  const BLOG_FIELDS = "id title content publishedAt author { username }";
  // latestCursor first: fields resolve in order, so a blog published in between is in the list
  // or replayed after the cursor (or both, and merged), never in neither.
  const LATEST_BLOGS = `query LatestBlogs($first: Int!, $author: String) {
    latestCursor
    blogs(first: $first, author: $author) { edges { node { ${BLOG_FIELDS} } } }
  }`;
  const BLOG_CHANGED = `subscription LiveBlogs($author: String, $after: String) {
    blogChanged(author: $author, after: $after) { cursor kind blogId blog { ${BLOG_FIELDS} } }
  }`;

  const WEBSOCKET_FAILURES_BEFORE_SSE = 2; // handshakes that failed while HTTP answered

  const config = JSON.parse(document.getElementById("live-config").textContent);
  const list = document.getElementById("blogs");
  const empty = document.getElementById("empty");
  const status = document.getElementById("status");

  const shown = new Map(); // blog id -> its <li>
  let lastCursor = null; // where the next subscription resumes
  let socket = null;
  let failedAttempts = 0;
  let reconnectTimer = null;
  let nextOperationId = 1;
  let liveOperation = null; // the subscription's operation id
  let source = null; // the EventSource, once on server-sent events
  let transport =
    new URLSearchParams(window.location.search).get("transport") === "sse" || typeof WebSocket === "undefined"
      ? "sse"
      : "websocket";
  let failedHandshakes = 0;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.dataset.transport = transport;
    status.textContent = text;
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function databaseId(globalId) {
    try {
      return Number(atob(globalId).split(":")[1]) || 0;
    } catch (error) {
      return 0;
    }
  }

  // Newest first: by publication time, then by id for blogs published in the same millisecond.
  function listedBefore(a, b) {
    const timeA = Date.parse(a.publishedAt);
    const timeB = Date.parse(b.publishedAt);
    return timeA !== timeB ? timeA > timeB : databaseId(a.id) > databaseId(b.id);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    node.textContent = text;
    return node;
  }

  function excerpt(text) {
    return text.length > EXCERPT_CHARS ? text.slice(0, EXCERPT_CHARS).trimEnd() + "…" : text;
  }

  function show(blog, pushed) {
    const known = shown.get(blog.id);
    if (!known && pushed === "edited") {
      // An edit of a blog not on the page: show it only where it belongs among those shown.
      const last = list.lastElementChild;
      if (!last || !listedBefore(blog, last.blog)) return;
    }
    const item = known || document.createElement("li");
    item.className = known ? known.className : "blog";
    item.dataset.id = blog.id;
    item.replaceChildren(
      element("h2", "title", blog.title),
      element("p", "meta", `by ${blog.author.username} · ${new Date(blog.publishedAt).toLocaleString()}`),
      element("p", "content", excerpt(blog.content)),
    );
    if (known && pushed) {
      item.classList.remove("pushed");
      void item.offsetWidth; // restart the highlight
      item.classList.add("pushed");
      item.dataset.editedAt = String(Date.now());
    }
    if (!known) {
      const blogData = { id: blog.id, publishedAt: blog.publishedAt };
      item.blog = blogData;
      const later = Array.from(list.children).find((other) => listedBefore(blogData, other.blog));
      list.insertBefore(item, later || null);
      shown.set(blog.id, item);
      if (pushed) {
        item.classList.add("pushed");
        item.dataset.receivedAt = String(Date.now());
      }
    }
    while (shown.size > MAX_SHOWN) {
      const oldest = list.lastElementChild;
      shown.delete(oldest.dataset.id);
      oldest.remove();
    }
    empty.hidden = shown.size > 0;
  }

  function remove(blogId) {
    const item = shown.get(blogId);
    if (item) {
      shown.delete(blogId);
      item.remove();
    }
    empty.hidden = shown.size > 0;
  }

  // One pushed change: the cursor to resume after, then the list brought up to date.
  function apply(change) {
    lastCursor = change.cursor;
    if (change.kind === "DELETED") remove(change.blogId);
    else show(change.blog, change.kind === "CREATED" ? "created" : "edited");
  }

  async function loadLatest() {
    const response = await fetch(config.graphqlPath, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ query: LATEST_BLOGS, variables: { first: config.first, author: config.author } }),
    });
    const result = await response.json();
    if (result.errors && result.errors.length) {
      throw new Error(result.errors[0].message);
    }
    result.data.blogs.edges.forEach((edge) => show(edge.node, false));
    empty.hidden = shown.size > 0;
    lastCursor = result.data.latestCursor;
  }

  function send(ws, message) {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(message));
    }
  }

  function subscribe(ws) {
    liveOperation = String(nextOperationId++);
    send(ws, {
      id: liveOperation,
      type: "subscribe",
      payload: { query: BLOG_CHANGED, variables: { author: config.author, after: lastCursor } },
    });
  }

  // Read the list (and a cursor) when there is no cursor to resume from, then subscribe.
  function start(ws, liveLabel) {
    const ready = lastCursor === null ? loadLatest() : Promise.resolve();
    ready.then(
      () => {
        if (socket !== ws) return;
        subscribe(ws);
        setStatus("live", liveLabel);
      },
      (error) => {
        setStatus("error", `Could not load the latest blogs: ${error.message}`);
        ws.close(); // reconnect, which tries again
      },
    );
  }

  function onAck(ws, payload) {
    failedAttempts = 0;
    start(ws, payload && payload.instance ? `Live · ${payload.instance}` : "Live");
  }

  function onOperationError(ws, errors) {
    const codes = (errors || []).map((error) => error.extensions && error.extensions.code);
    if (codes.includes("BAD_USER_INPUT")) {
      // The cursor is older than the server's replay window (or unknown to it): start afresh.
      lastCursor = null;
      start(ws, status.textContent);
      return;
    }
    const message = (errors && errors[0] && errors[0].message) || "unknown error";
    setStatus("error", `Subscription failed: ${message}`);
  }

  function onMessage(ws, message) {
    const forLiveOperation = liveOperation !== null && message.id === liveOperation;
    switch (message.type) {
      case "connection_ack":
        onAck(ws, message.payload);
        break;
      case "ping":
        send(ws, { type: "pong" });
        break;
      case "next": {
        const change = forLiveOperation && message.payload.data && message.payload.data.blogChanged;
        if (change) apply(change);
        break;
      }
      case "error":
        if (forLiveOperation) onOperationError(ws, message.payload);
        break;
      case "complete":
        if (forLiveOperation) ws.close(); // the server ended it: start afresh
        break;
    }
  }

  function scheduleReconnect(why = "Disconnected") {
    clearTimeout(reconnectTimer);
    if (!navigator.onLine) {
      setStatus("offline", "Offline: waiting for the network…");
      return; // the "online" event reconnects
    }
    failedAttempts += 1;
    // Exponential backoff with jitter, so a restarted server is not hit by every page at once.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (failedAttempts - 1));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    setStatus("reconnecting", `${why}: reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
    reconnectTimer = setTimeout(connect, delay);
  }

  // The handshake failed before the socket opened: if plain HTTP gets through, websockets are what
  // is blocked, and server-sent events are the way round; if it does not, the server is down.
  function onHandshakeFailed() {
    failedHandshakes += 1;
    if (failedHandshakes < WEBSOCKET_FAILURES_BEFORE_SSE) {
      scheduleReconnect();
      return;
    }
    fetch(config.graphqlPath, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ query: "query Reachable { latestCursor }" }),
    }).then(
      (response) => {
        if (response.ok) transport = "sse";
        scheduleReconnect();
      },
      () => scheduleReconnect(),
    );
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (transport === "sse") {
      connectEventSource();
      return;
    }
    if (socket !== null) return;
    const url = new URL(config.subscriptionPath, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (failedAttempts === 0) setStatus("connecting", "Connecting…");
    let ws;
    try {
      ws = new WebSocket(url, "graphql-transport-ws");
    } catch (error) {
      transport = "sse"; // refused outright (a policy of this page's context)
      scheduleReconnect();
      return;
    }
    let opened = false;
    socket = ws;
    ws.addEventListener("open", () => {
      opened = true;
      failedHandshakes = 0;
      send(ws, { type: "connection_init", payload: {} });
    });
    ws.addEventListener("message", (event) => {
      try {
        onMessage(ws, JSON.parse(event.data));
      } catch (error) {
        console.error("Unexpected message", event.data, error);
      }
    });
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      socket = null;
      liveOperation = null;
      // 4403: the sign-in this socket had ended (signed out, account deactivated). The feed is
      // public: reconnect like after any drop, with whatever session the browser has now.
      if (opened) scheduleReconnect(event.code === 4403 ? "Signed out by the server" : undefined);
      else onHandshakeFailed();
    });
  }

  // ------------------------------------------------------------------ server-sent events

  function connectEventSource() {
    if (source !== null) return;
    if (failedAttempts === 0) setStatus("connecting", "Connecting…");
    const ready = lastCursor === null ? loadLatest() : Promise.resolve();
    ready.then(openEventSource, (error) => {
      setStatus("error", `Could not load the latest blogs: ${error.message}`);
      scheduleReconnect();
    });
  }

  function openEventSource() {
    if (source !== null) return;
    const url = new URL(config.graphqlPath, window.location.href);
    url.searchParams.set("query", BLOG_CHANGED);
    url.searchParams.set("operationName", "LiveBlogs");
    // The browser reconnects to this same URL by itself; `Last-Event-ID` (the last event's
    // cursor) then tells the server where to resume, whatever `after` says here.
    url.searchParams.set("variables", JSON.stringify({ author: config.author, after: lastCursor }));
    const es = new EventSource(url);
    source = es;
    es.addEventListener("open", () => {
      failedAttempts = 0;
      setStatus("live", "Live · server-sent events");
    });
    es.addEventListener("next", (event) => {
      const result = JSON.parse(event.data);
      if (result.errors && result.errors.length) {
        onStreamErrors(result.errors);
        return;
      }
      const change = result.data && result.data.blogChanged;
      if (change) apply(change);
    });
    // The server completes a stream only after refusing it (errors above): start afresh.
    es.addEventListener("complete", () => closeEventSource(es));
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED) {
        closeEventSource(es); // refused (busy, shutting down): our own backoff from here
      } else {
        setStatus("reconnecting", "Disconnected: reconnecting…"); // the browser is at it, with Last-Event-ID
      }
    });
  }

  function onStreamErrors(errors) {
    const codes = errors.map((error) => error.extensions && error.extensions.code);
    if (codes.includes("BAD_USER_INPUT")) {
      lastCursor = null; // too old for the server's replay window: read the list again
      return;
    }
    setStatus("error", `Subscription failed: ${errors[0].message}`);
  }

  function closeEventSource(es) {
    es.close();
    if (source !== es) return;
    source = null;
    scheduleReconnect();
  }

  window.addEventListener("online", connect);
  connect();
})();
