"""The live-feed page: events over a WebSocket and over server-sent events, side by side."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zmqhttp live feed</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
  main { display: flex; gap: 2em; flex-wrap: wrap; }
  section { flex: 1 1 22em; border: 1px solid #ccc; border-radius: 6px; padding: 0 1em 1em; }
  .state { font-weight: bold; }
  .open { color: #070; } .closed { color: #a00; }
  ol { font-family: ui-monospace, monospace; font-size: 13px; padding-left: 1.5em; }
  form { margin: 1em 0; }
</style>
</head>
<body>
<h1>zmqhttp live feed</h1>
<p>A ZeroMQ PUB socket publishes a tick every 200 ms; each event reaches this page twice,
over a WebSocket and over server-sent events.</p>
<form id="publish-form">
  <input id="msg" name="msg" placeholder="a message to publish" autocomplete="off">
  <button type="submit">Publish</button>
</form>
<main>
  <section>
    <h2>WebSocket <code>/ws</code></h2>
    <p>State: <span id="ws-state" class="state closed">connecting</span></p>
    <p>Last tick: <span id="ws-tick">-</span></p>
    <ol id="ws-log"></ol>
  </section>
  <section>
    <h2>Server-sent events <code>/events</code></h2>
    <p>State: <span id="sse-state" class="state closed">connecting</span></p>
    <p>Last tick: <span id="sse-tick">-</span></p>
    <ol id="sse-log"></ol>
  </section>
</main>
<script>
"use strict";
const base = location.pathname.replace(/[^/]*$/, "");
const KEEP = 50;

function setState(which, text, open) {
  const el = document.getElementById(which + "-state");
  el.textContent = text;
  el.className = "state " + (open ? "open" : "closed");
}

function show(which, event) {
  const when = event.time ? new Date(event.time * 1000).toLocaleTimeString() : "";
  if (event.kind === "tick") {
    document.getElementById(which + "-tick").textContent = "#" + event.n + " at " + when;
    return;
  }
  const log = document.getElementById(which + "-log");
  const item = document.createElement("li");
  item.textContent = when + " [" + (event.via || "?") + "] " + (event.msg ?? JSON.stringify(event));
  log.prepend(item);
  while (log.children.length > KEEP) log.lastChild.remove();
}

function connectWebSocket() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + base + "ws");
  ws.onopen = () => setState("ws", "open", true);
  ws.onmessage = (e) => show("ws", JSON.parse(e.data));
  ws.onclose = (e) => {
    setState("ws", "closed (" + e.code + "), reconnecting", false);
    setTimeout(connectWebSocket, 1000);
  };
}

const source = new EventSource(base + "events");
source.onopen = () => setState("sse", "open", true);
source.onmessage = (e) => show("sse", JSON.parse(e.data));
source.onerror = () => setState("sse", "reconnecting", false);

connectWebSocket();

document.getElementById("publish-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("msg");
  if (!input.value) return;
  await fetch(base + "publish", {method: "POST", body: new URLSearchParams({msg: input.value})});
  input.value = "";
});
</script>
</body>
</html>
"""
