// GhostLine web: the page. It shows what the local server sends over the WebSocket
// and sends back what the person does. Every string from the server is put in the
// page with textContent, never as HTML: the server has already made other people's
// text safe to show (ghostline.display), and this keeps it text.
// One file (about 600 lines, in sections) rather than modules: every script the page
// loads must carry the run's token in its address, which index.html gives this one.
"use strict";

(function () {
  const token = new URLSearchParams(location.search).get("t") || "";
  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const input = $("input");
  const state = {
    me: -1, names: [], more: false, seen: null, maxText: 0,
    ws: null, retry: 500, ref: 0, pending: new Map(), loadingOlder: false,
    padLevel: "ok", unreadMarked: false, lastSeenSent: null, connection: {},
    retryTimer: null, titleBase: "GhostLine", unseen: 0, offer: null,
  };

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function withToken(path) {
    return path + (path.includes("?") ? "&" : "?") + "t=" + encodeURIComponent(token);
  }

  // -- time ---------------------------------------------------------------------

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function dayKey(seconds) {
    const d = new Date(seconds * 1000);
    return d.getFullYear() + "-" + d.getMonth() + "-" + d.getDate();
  }

  function dayLabel(seconds) {
    const d = new Date(seconds * 1000);
    const today = new Date();
    const yesterday = new Date(today.getTime() - 86400000);
    if (dayKey(seconds) === dayKey(today.getTime() / 1000)) return "Today";
    if (dayKey(seconds) === dayKey(yesterday.getTime() / 1000)) return "Yesterday";
    return d.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", year: "numeric" });
  }

  // -- the conversation ---------------------------------------------------------------

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function scrollToEnd() {
    log.scrollTop = log.scrollHeight;
    $("jump").hidden = true;
  }

  const STATE_LABEL = { sealed: "sealed, not sent yet", sending: "sending…", stored: "stored ✓" };

  function renderLine(line) {
    let node;
    if (line.kind === "message") {
      node = el("div", "msg" + (line.own ? " own" : ""));
      node.dataset.sender = String(line.sender);
      const who = el("div", "who s" + (line.sender % 8), line.own ? "You" : line.name);
      const bubble = el("div", "bubble");
      showText(bubble, line);
      const meta = el("div", "meta");
      meta.appendChild(el("span", "time", clock(line.time)));
      if (line.own && line.state) {
        meta.appendChild(el("span", "state " + line.state, STATE_LABEL[line.state]));
      }
      bubble.appendChild(meta);
      node.append(who, bubble);
    } else {
      node = el("div", line.kind === "warning" ? "warning" : "note");
      if (line.kind === "warning") node.appendChild(el("span", "time", clock(line.time)));
      line.lines.forEach((text, i) => {
        node.appendChild(el(i === 0 ? "span" : "div", "text-line" + (i > 0 ? " cont" : ""), text));
      });
      if (line.kind !== "warning") node.appendChild(el("span", "time", clock(line.time)));
      node.setAttribute("role", line.kind === "warning" ? "alert" : "note");
    }
    node.id = "line-" + line.id;
    node.dataset.time = String(line.time);
    node.dataset.kind = line.kind;
    return node;
  }

  // A message's lines, every one after the first marked as a continuation. A very long
  // message comes folded (line.more says what is left out) with a button that fetches
  // the whole text; shown whole, its continuation is one block (one element, not one
  // per line: 100,000 lines would take seconds to lay out).
  const BLOCK_AFTER = 200;

  function showText(bubble, line) {
    const rows = line.lines.length > BLOCK_AFTER ? [line.lines[0], line.lines.slice(1).join("\n")] : line.lines;
    rows.forEach((text, i) => {
      const row = el("div", "text-line" + (i > 0 ? " cont" : ""), text);
      if (i > 0) row.title = "continuation of the same message";
      bubble.appendChild(row);
    });
    if (line.more) {
      const more = el("button", "show-all", "Show all (" + line.more + ")");
      more.type = "button";
      more.addEventListener("click", () => {
        more.disabled = true;
        more.textContent = "Loading…";
        send({ type: "whole", id: line.id });
      });
      bubble.appendChild(more);
    }
  }

  function showWhole(answer) {
    const node = $("line-" + answer.id);
    if (!node) return;
    if (answer.line) {
      upsert(answer.line, "bottom");
      relayout();
      return;
    }
    const button = node.querySelector(".show-all");
    if (button) button.replaceWith(el("div", "show-all-error", answer.error));
  }

  function upsert(line, where) {
    const old = $("line-" + line.id);
    if (old) {
      const fresh = renderLine(line);
      if (old.querySelector(".state.stored") && fresh.querySelector(".state")) {
        fresh.querySelector(".state").replaceWith(old.querySelector(".state").cloneNode(true));
      }
      old.replaceWith(fresh);
      return null;
    }
    const node = renderLine(line);
    if (where === "top") log.insertBefore(node, $("older").nextSibling);
    else log.appendChild(node);
    return node;
  }

  // Day separators and "follow" (same sender, no name again) follow the order of the
  // lines, which grows at both ends: recomputed after each batch.
  function relayout() {
    log.querySelectorAll(".day").forEach((d) => d.remove());
    let lastDay = null;
    let lastSender = null;
    for (const node of Array.from(log.children)) {
      if (!node.dataset || !node.dataset.time) {
        if (node.classList.contains("unread")) lastSender = null;
        continue;
      }
      const t = Number(node.dataset.time);
      const key = dayKey(t);
      if (key !== lastDay) {
        const sep = el("div", "day");
        sep.appendChild(el("span", null, dayLabel(t)));
        log.insertBefore(sep, node);
        lastDay = key;
        lastSender = null;
      }
      if (node.dataset.kind === "message") {
        node.classList.toggle("follow", node.dataset.sender === lastSender);
        lastSender = node.dataset.sender;
      } else {
        lastSender = null;
      }
    }
  }

  function markUnreadBefore(node) {
    if (!node || $("unread")) return;
    const marker = el("div", "unread", "New since you left");
    marker.id = "unread";
    log.insertBefore(marker, node);
    state.unreadMarked = true;
  }

  function showSnapshot(snap) {
    state.me = snap.me;
    state.names = snap.names;
    state.more = snap.more;
    state.seen = snap.seen;
    state.maxText = snap.max_text;
    $("group").textContent = snap.group || "GhostLine";
    state.titleBase = snap.group ? "GhostLine · " + snap.group : "GhostLine";
    document.title = state.titleBase;
    $("whoami").textContent = "you are " + snap.names[snap.me] + " · " + snap.transport;
    Array.from(log.children).forEach((n) => { if (n.id !== "older") n.remove(); });
    // "New since you left": the first message from someone else after the last one
    // seen; when that one is older than this page, every message here is new.
    const seenInPage = snap.lines.some((line) => line.id === state.seen);
    let seenFound = false;
    let marker = null;
    for (const line of snap.lines) {
      const node = upsert(line, "bottom");
      if (line.id === state.seen) { seenFound = true; continue; }
      if (!marker && node && line.kind === "message" && !line.own && state.seen &&
          (seenFound || (!seenInPage && snap.more))) {
        marker = node;
      }
    }
    if (marker) markUnreadBefore(marker);
    // The last message seen is further back: the marker moves up as older pages load.
    state.markerPending = Boolean(marker) && !seenInPage;
    $("older").hidden = !state.more;
    relayout();
    showConnection(snap.connection);
    showMembers(snap.members);
    $("transfers").replaceChildren();
    snap.transfers.forEach(showTransfer);
    const unread = $("unread");
    if (unread) unread.scrollIntoView({ block: "start" });
    else scrollToEnd();
    reportSeen();
  }

  function showLive(line) {
    const stick = atBottom();
    const node = upsert(line, "bottom");
    if (!node) return;
    const fromOther = line.kind === "message" && !line.own;
    if (fromOther && (document.hidden || !stick)) markUnreadBefore(node);
    relayout();
    if (stick || line.own) scrollToEnd();
    else if (fromOther) $("jump").hidden = false;
    if (fromOther && document.hidden) {
      state.unseen += 1;
      document.title = "(" + state.unseen + ") " + state.titleBase;
      notify(line);
    }
    reportSeen();
  }

  function showOlder(answer) {
    state.loadingOlder = false;
    state.more = answer.more;
    const before = log.scrollHeight - log.scrollTop;
    const nodes = [];
    for (let i = answer.lines.length - 1; i >= 0; i--) nodes[i] = upsert(answer.lines[i], "top");
    if (state.markerPending) moveUnreadUp(answer.lines, nodes);
    $("older").hidden = !state.more;
    relayout();
    log.scrollTop = log.scrollHeight - before; // keep the same messages in view
  }

  function moveUnreadUp(lines, nodes) {
    const seenAt = lines.findIndex((line) => line.id === state.seen);
    let target = null;
    for (let i = seenAt + 1; i < lines.length; i++) {
      if (nodes[i] && lines[i].kind === "message" && !lines[i].own) { target = nodes[i]; break; }
    }
    if (seenAt >= 0 || !state.more) state.markerPending = false;
    if (target) log.insertBefore($("unread"), target);
  }

  function loadOlder() {
    if (!state.more || state.loadingOlder) return;
    state.loadingOlder = true;
    send({ type: "older" });
  }

  function setState(id, value) {
    const node = $("line-" + id);
    const label = node && node.querySelector(".state");
    if (!label || label.classList.contains("stored")) return; // stored is final
    label.className = "state " + value;
    label.textContent = STATE_LABEL[value];
  }

  function setUnstored(value) {
    log.querySelectorAll(".state.sealed, .state.sending").forEach((label) => {
      label.className = "state " + value;
      label.textContent = STATE_LABEL[value];
    });
  }

  // The newest message the person has seen: the page is visible and at the bottom.
  function reportSeen() {
    if (document.hidden || !atBottom()) return;
    const messages = log.querySelectorAll(".msg");
    const last = messages[messages.length - 1];
    if (!last) return;
    const id = last.id.slice("line-".length);
    state.unseen = 0;
    document.title = state.titleBase;
    $("jump").hidden = true;
    if (id !== state.lastSeenSent) {
      state.lastSeenSent = id;
      send({ type: "seen", id: id });
    }
  }

  // -- members, pad, connection ------------------------------------------------------

  function showMembers(msg) {
    const list = $("members");
    list.replaceChildren();
    for (const m of msg.members) {
      const li = el("li");
      const dot = el("span", "presence" + (m.online === null ? " unknown" : m.online ? " on" : ""));
      dot.title = m.you ? "you" : m.online === null ? "not known (presence is down)" : m.online ? "online" : "offline";
      const name = el("span", "name s" + (m.index % 8), m.name);
      if (m.you) name.appendChild(el("span", "you", " (you)"));
      const left = el("span", "left", m.pad ? m.pad.percent + " left" : "");
      li.append(dot, name, left);
      if (m.pad) {
        const bar = el("progress", m.pad.level);
        bar.max = 1;
        bar.value = m.pad.fraction;
        bar.title = m.pad.summary + " left" + (m.you ? "" : " (at least: counted from what you received)");
        li.appendChild(bar);
      }
      if (m.failed) li.appendChild(el("span", "failed", "⚠ " + m.failed));
      list.appendChild(li);
    }
    if (msg.pad) showPad(msg.pad);
  }

  function showPad(pad) {
    const bar = $("pad-bar");
    bar.value = pad.fraction;
    bar.className = pad.level;
    $("pad-pct").textContent = pad.percent;
    $("pad-summary").textContent = "left: " + pad.summary;
    const banner = $("banner");
    banner.hidden = !pad.warning;
    banner.textContent = pad.warning;
    banner.className = "banner " + pad.level;
    state.padLevel = pad.level;
    updateComposer();
  }

  function updateComposer() {
    const exhausted = state.padLevel === "exhausted";
    input.disabled = exhausted;
    $("send").disabled = exhausted;
    $("attach").disabled = exhausted;
    const note = $("composer-note");
    note.classList.toggle("bad", exhausted);
    note.textContent = exhausted
      ? "Sending is disabled: your pad is used up. You can still read what others send."
      : "Enter sends · Shift+Enter for a new line";
    input.placeholder = exhausted ? "Your pad is used up" : "Write a message";
  }

  function showConnection(c) {
    state.connection = c;
    const box = $("status");
    const text = $("status-text");
    const detail = $("status-detail");
    clearInterval(state.retryTimer);
    box.className = "status " + (c.state || "connecting");
    detail.hidden = true;
    detail.className = "status-detail";
    if (c.state === "connected") {
      text.textContent = "Connected";
      box.title = "connected to " + (c.relay || "the relay");
      if (c.presence) {
        detail.hidden = false;
        detail.textContent = "Who is online is not known right now: " + c.presence;
      }
    } else if (c.state === "reconnecting") {
      const until = Date.now() + (c.retry_in || 0) * 1000;
      const tick = () => {
        const left = Math.max(0, Math.round((until - Date.now()) / 1000));
        text.textContent = c.retry_in ? "Reconnecting in " + left + " s" : "Reconnecting…";
      };
      tick();
      if (c.retry_in) state.retryTimer = setInterval(tick, 1000);
      if (c.detail) {
        detail.hidden = false;
        detail.textContent = "Lost the relay (" + (c.relay || "") + "): " + c.detail +
          ". Messages you send are sealed and kept until it is back.";
      }
    } else if (c.state === "stopped") {
      text.textContent = c.failure ? "Relay refused" : "Disconnected";
      detail.hidden = false;
      detail.className = "status-detail bad";
      detail.textContent = c.failure
        ? "The relay refused this kit: " + c.failure
        : "Not connected to the relay.";
    } else {
      text.textContent = "Connecting…";
    }
  }

  function serverLost() {
    const box = $("status");
    box.className = "status lost";
    $("status-text").textContent = "Local app stopped?";
    const detail = $("status-detail");
    detail.hidden = false;
    detail.className = "status-detail bad";
    detail.textContent = "Lost contact with ghostline web on this computer; trying again. " +
      "If you stopped it, start it again and open the new address it prints.";
  }

  // -- files ---------------------------------------------------------------------------

  function showTransfer(t) {
    const list = $("transfers");
    let li = $("t-" + t.key);
    if (!li) {
      li = el("li");
      li.id = "t-" + t.key;
      list.insertBefore(li, list.firstChild);
    }
    li.className = t.ok === false ? "failed" : t.ok ? "done" : "";
    li.replaceChildren(el("div", "title", t.title));
    if (t.ok !== true || t.done < t.total) {
      const bar = el("progress", "transfer");
      bar.max = t.total || 1;
      bar.value = t.done;
      li.appendChild(bar);
    }
    li.appendChild(el("div", "tstatus", t.status));
    if (t.download) {
      const a = el("a", null, "Save a copy");
      a.href = withToken("/files/" + encodeURIComponent(t.download));
      a.setAttribute("download", "");
      li.appendChild(a);
    }
    $("no-files").hidden = list.children.length > 0;
  }

  async function uploadFile(file) {
    if (!file || state.padLevel === "exhausted") return;
    const note = $("composer-note");
    note.textContent = "Reading " + file.name + "…";
    let offer;
    try {
      const response = await fetch(withToken("/upload?name=" + encodeURIComponent(file.name)), {
        method: "POST", body: file, credentials: "omit", cache: "no-store",
      });
      offer = await response.json();
    } catch (err) {
      offer = { error: "could not hand the file to ghostline web (" + err + ")" };
    }
    updateComposer();
    const dialog = $("offer");
    state.offer = offer.refused || offer.error ? null : offer.id;
    $("offer-title").textContent = offer.error || offer.refused ? "Cannot send this file" : "Send this file to the group?";
    $("offer-name").textContent = offer.name ? offer.name + " (" + offer.size + ")" : "";
    $("offer-cost").textContent = offer.error || offer.refused ||
      "It uses " + offer.cost + " of your pad in " + offer.messages + " messages.";
    $("offer-after").textContent = offer.after ? "Left afterwards: " + offer.after + "." : "";
    $("offer-send").hidden = !state.offer;
    $("offer-cancel").textContent = state.offer ? "Cancel" : "Close";
    dialog.returnValue = "";
    dialog.showModal();
    (state.offer ? $("offer-send") : $("offer-cancel")).focus();
  }

  $("offer").addEventListener("close", () => {
    const id = state.offer;
    state.offer = null;
    if (!id) return;
    send({ type: $("offer").returnValue === "send" ? "file_send" : "file_cancel", id: id });
    input.focus();
  });

  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    $("file").value = "";
    uploadFile(file);
  });

  let dragDepth = 0;
  window.addEventListener("dragenter", (e) => {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
    dragDepth += 1;
    $("drop").hidden = false;
  });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) $("drop").hidden = true;
  });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    dragDepth = 0;
    $("drop").hidden = true;
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) uploadFile(file);
  });

  // -- notifications -------------------------------------------------------------------

  function notify(line) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const n = new Notification(line.name + " · " + state.titleBase, {
      // Continuation lines marked, as on the page: none can pass for another message.
      body: line.lines.map((text, i) => (i ? "↳ " + text : text)).join("\n").slice(0, 200),
      tag: "ghostline",
    });
    n.onclick = () => { window.focus(); n.close(); };
  }

  function offerNotifications() {
    const button = $("notify");
    if (!("Notification" in window) || Notification.permission !== "default") {
      button.hidden = true;
      return;
    }
    button.hidden = false;
    button.onclick = async () => {
      await Notification.requestPermission();
      offerNotifications();
    };
  }

  // -- composer ------------------------------------------------------------------------

  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 180) + "px";
  }

  function submit() {
    const text = input.value;
    if (!text.trim() || input.disabled) return;
    if (state.maxText && new TextEncoder().encode(text).length > state.maxText) {
      $("composer-note").textContent = "Too long for one message: send it as a file.";
      $("composer-note").classList.add("bad");
      return;
    }
    const ref = ++state.ref;
    state.pending.set(ref, text);
    if (!send({ type: "send", text: text, ref: ref })) return;
    input.value = "";
    grow();
    const unread = $("unread");
    if (unread) unread.remove();
  }

  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", grow);
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); submit(); input.focus(); });

  function ack(msg) {
    const text = state.pending.get(msg.ref);
    state.pending.delete(msg.ref);
    if (!msg.error) return;
    if (text !== undefined && !input.value) { input.value = text; grow(); }
    const note = $("composer-note");
    note.textContent = msg.error;
    note.classList.add("bad");
  }

  // -- panel, scrolling, keys ----------------------------------------------------------

  $("panel-toggle").addEventListener("click", () => {
    const open = $("side").classList.toggle("open");
    $("panel-toggle").setAttribute("aria-expanded", String(open));
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && $("side").classList.contains("open")) {
      $("side").classList.remove("open");
      $("panel-toggle").setAttribute("aria-expanded", "false");
      $("panel-toggle").focus();
    }
  });
  $("older-btn").addEventListener("click", loadOlder);
  $("jump").addEventListener("click", () => { scrollToEnd(); reportSeen(); });
  log.addEventListener("scroll", () => {
    if (log.scrollTop < 80) loadOlder();
    if (atBottom()) reportSeen();
  });
  document.addEventListener("visibilitychange", reportSeen);

  // -- the WebSocket -------------------------------------------------------------------

  function send(message) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      const note = $("composer-note");
      note.textContent = "Not connected to ghostline web on this computer: try again in a moment.";
      note.classList.add("bad");
      return false;
    }
    state.ws.send(JSON.stringify(message));
    return true;
  }

  const HANDLERS = {
    snapshot: showSnapshot,
    line: (m) => showLive(m.line),
    older: showOlder,
    whole: showWhole,
    state: (m) => setState(m.id, m.state),
    unstored: (m) => setUnstored(m.state),
    members: showMembers,
    connection: showConnection,
    transfer: showTransfer,
    ack: ack,
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + withToken("/ws"));
    state.ws = ws;
    ws.onopen = () => { state.retry = 500; };
    ws.onmessage = (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (err) { return; }
      const handler = HANDLERS[msg.type];
      if (handler) handler(msg);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      serverLost();
      setTimeout(connect, state.retry);
      state.retry = Math.min(state.retry * 2, 10000);
    };
  }

  offerNotifications();
  updateComposer();
  connect();
  input.focus();
})();
