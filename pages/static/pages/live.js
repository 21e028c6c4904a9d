/* The live page: the latest blogs over HTTP, new ones pushed over graphql-transport-ws.
 *
 * No framework and no build step. On every (re)connect it subscribes first and only then
 * re-reads the latest blogs, merging by id: a blog published while the socket was down still
 * shows up after the reconnect, and none shows up twice.
 */
"use strict";

(function () {
  // After a drop, resubscribe with `blogPublished(after: <last cursor seen>)` so the server
  // replays what was missed. A server without that argument answers GRAPHQL_VALIDATION_FAILED;
  // the page then stops asking and relies on re-reading the latest blogs alone.
  const RESUME_WITH_AFTER = true;
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_SHOWN = 100;
  const EXCERPT_CHARS = 280;

  const BLOG_FIELDS = "id title content publishedAt author { username }";
  const LATEST_BLOGS = `query LatestBlogs($first: Int!, $author: String) {
    blogs(first: $first, author: $author) { edges { node { ${BLOG_FIELDS} } } }
  }`;
  const BLOG_PUBLISHED = `subscription LiveBlogs($author: String) {
    blogPublished(author: $author) { cursor blog { ${BLOG_FIELDS} } }
  }`;
  const BLOG_PUBLISHED_AFTER = `subscription LiveBlogsAfter($author: String, $after: String) {
    blogPublished(author: $author, after: $after) { cursor blog { ${BLOG_FIELDS} } }
  }`;

  const config = JSON.parse(document.getElementById("live-config").textContent);
  const list = document.getElementById("blogs");
  const empty = document.getElementById("empty");
  const status = document.getElementById("status");

  const shown = new Map(); // blog id -> its <li>
  let lastCursor = null;
  let resumeWithAfter = RESUME_WITH_AFTER;
  let socket = null;
  let failedAttempts = 0;
  let reconnectTimer = null;
  let nextOperationId = 1;
  let liveOperation = null; // {id, resumed}

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
  }

  function send(ws, message) {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(message));
    }
  }

  function subscribe(ws) {
    const resumed = resumeWithAfter && lastCursor !== null;
    const variables = resumed ? { author: config.author, after: lastCursor } : { author: config.author };
    liveOperation = { id: String(nextOperationId++), resumed };
    send(ws, {
      id: liveOperation.id,
      type: "subscribe",
      payload: { query: resumed ? BLOG_PUBLISHED_AFTER : BLOG_PUBLISHED, variables },
    });
  }

  function onAck(ws, payload) {
    failedAttempts = 0;
    const instance = payload && payload.instance ? ` · ${payload.instance}` : "";
    subscribe(ws); // first, so nothing published during the read below is missed
    loadLatest().then(
      () => socket === ws && setStatus("live", `Live${instance}`),
      (error) => {
        setStatus("error", `Could not load the latest blogs: ${error.message}`);
        ws.close(); // reconnect, which reads them again
      },
    );
  }

  function onOperationError(ws, errors) {
    const codes = (errors || []).map((error) => error.extensions && error.extensions.code);
    if (liveOperation.resumed && codes.includes("GRAPHQL_VALIDATION_FAILED")) {
      resumeWithAfter = false; // this server has no `after` yet
      subscribe(ws);
      return;
    }
    const message = (errors && errors[0] && errors[0].message) || "unknown error";
    setStatus("error", `Subscription failed: ${message}`);
  }

  function onMessage(ws, message) {
    const forLiveOperation = liveOperation !== null && message.id === liveOperation.id;
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
