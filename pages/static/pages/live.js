/* The live page: the latest blogs over HTTP, new ones pushed over graphql-transport-ws.
 *
 * No framework and no build step. It reads the latest blogs together with `latestCursor`, then
 * subscribes with `blogPublished(after: <cursor>)`: the server replays whatever was published
 * in between, so nothing falls into the gap. After a drop it resubscribes after the last cursor
 * it saw and gets what it missed, once and in order. Blogs are merged by id all the same.
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
  const BLOG_PUBLISHED = `subscription LiveBlogs($author: String, $after: String) {
    blogPublished(author: $author, after: $after) { cursor blog { ${BLOG_FIELDS} } }
  }`;

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

  function setStatus(state, text) {
    status.dataset.state = state;
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
    const item = known || document.createElement("li");
    item.className = known ? known.className : "blog";
    item.dataset.id = blog.id;
    item.replaceChildren(
      element("h2", "title", blog.title),
      element("p", "meta", `by ${blog.author.username} · ${new Date(blog.publishedAt).toLocaleString()}`),
      element("p", "content", excerpt(blog.content)),
    );
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
      payload: { query: BLOG_PUBLISHED, variables: { author: config.author, after: lastCursor } },
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
        const event = forLiveOperation && message.payload.data && message.payload.data.blogPublished;
        if (event) {
          lastCursor = event.cursor;
          show(event.blog, true);
        }
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

  function scheduleReconnect() {
    clearTimeout(reconnectTimer);
    if (!navigator.onLine) {
      setStatus("offline", "Offline: waiting for the network…");
      return; // the "online" event reconnects
    }
    failedAttempts += 1;
    // Exponential backoff with jitter, so a restarted server is not hit by every page at once.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (failedAttempts - 1));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    setStatus("reconnecting", `Disconnected: reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
    reconnectTimer = setTimeout(connect, delay);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (socket !== null) return;
    const url = new URL(config.subscriptionPath, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (failedAttempts === 0) setStatus("connecting", "Connecting…");
    const ws = new WebSocket(url, "graphql-transport-ws");
    socket = ws;
    ws.addEventListener("open", () => send(ws, { type: "connection_init", payload: {} }));
    ws.addEventListener("message", (event) => {
      try {
        onMessage(ws, JSON.parse(event.data));
      } catch (error) {
        console.error("Unexpected message", event.data, error);
      }
    });
    ws.addEventListener("close", () => {
      if (socket !== ws) return;
      socket = null;
      liveOperation = null;
      scheduleReconnect();
    });
  }

  window.addEventListener("online", connect);
  connect();
})();
