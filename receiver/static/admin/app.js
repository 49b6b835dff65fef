// Receiver admin page: products and counters, ingest-rate chart, live tail over the SSE stream.
// No framework, no CDN. Every value from the server goes in with textContent (event titles and
// URLs come from untrusted payloads).
"use strict";

(() => {
  const TOKEN_KEY = "receiver-admin-token";
  const REFRESH_MS = 5000;
  const TAIL_MAX = 200;
  const TAIL_BACKLOG = 20;

  const $ = (id) => document.getElementById(id);
  const state = { token: null, products: [], selected: null, source: null, lastPosition: 0, retry: null };

  // ------------------------------------------------------------------ token

  function takeTokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      history.replaceState(null, "", location.pathname + location.search);
    }
    const product = params.get("product");
    if (product) state.wanted = product;
  }

  function headers() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  async function api(path, options = {}) {
    const res = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
    if (res.status === 401 || res.status === 403) {
      const err = new Error("unauthorized");
      err.status = res.status;
      throw err;
    }
    if (!res.ok) throw new Error(path + " answered " + res.status);
    return res.json();
  }

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + (kind || "");
  }

  function showLogin(message) {
    $("main").hidden = true;
    $("login").hidden = false;
    $("logout").hidden = true;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    setStatus("admin token required", "bad");
  }

  // ------------------------------------------------------------------ products

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return d.toLocaleString();
  }

  function policyText(p) {
    if (!p || p.error) return p && p.error ? p.error : "default";
    const parts = ["email " + p.email, "query " + p.query];
    const redact = (p.builtin_redactions || []).concat((p.redact || []).length ? ["+" + p.redact.length + " custom"] : []);
    parts.push("redact " + (redact.length ? redact.join(", ") : "none"));
    return parts.join(" · ");
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function renderProducts() {
    const body = $("products").querySelector("tbody");
    body.replaceChildren();
    for (const p of state.products) {
      const tr = document.createElement("tr");
      tr.dataset.productId = p.product_id;
      if (p.product_id === state.selected) tr.classList.add("selected");
      cell(tr, p.product_id);
      cell(tr, String(p.events_total), "num");
      cell(tr, String(p.last_position), "num");
      cell(tr, fmtTime(p.last_event_at));
      cell(tr, String(p.events_last_5m), "num");
      cell(tr, String(p.subscribers), "num");
      const pol = cell(tr, "");
      const pill = document.createElement("span");
      const strict = p.privacy_policy && (p.privacy_policy.email !== "keep" || p.privacy_policy.query !== "keep");
      pill.className = "pill" + (strict ? " strict" : "");
      pill.textContent = policyText(p.privacy_policy);
      pol.appendChild(pill);
      tr.addEventListener("click", () => select(p.product_id));
      body.appendChild(tr);
    }
  }

  async function refreshProducts() {
    const data = await api("/admin/api/products");
    state.products = data.products;
    renderProducts();
    setStatus("connected · " + state.products.length + " product(s) · updated " + new Date().toLocaleTimeString(), "ok");
  }

  // ------------------------------------------------------------------ push

  function lastAnswer(e) {
    if (!e.last_attempt_at) return "—";
    if (e.last_error) return e.last_error; // says the status too ("HTTP 503: ...")
    return String(e.last_status);
  }

  function renderPush(endpoints) {
    const body = $("push").querySelector("tbody");
    body.replaceChildren();
    $("push-summary").textContent = endpoints.length
      ? "(" + endpoints.length + " endpoint(s))" : "(no product is in push mode)";
    for (const e of endpoints) {
      const tr = document.createElement("tr");
      tr.dataset.productId = e.product_id;
      tr.dataset.state = e.state;
      if (e.product_id === state.selected) tr.classList.add("selected");
      cell(tr, e.product_id);
      cell(tr, e.url).title = e.url;
      cell(tr, e.deliverer || "none");
      const st = cell(tr, e.state + (e.attempts ? " (attempt " + (e.attempts + 1) + ")" : ""));
      st.className = e.state === "retrying" || e.state === "no deliverer" ? "bad" : "";
      cell(tr, String(e.lag), "num lag");
      cell(tr, String(e.delivered_total), "num");
      cell(tr, String(e.dead_letters), "num dead");
      cell(tr, lastAnswer(e)).title = e.last_error || "";
      cell(tr, fmtTime(e.last_success_at));
      tr.addEventListener("click", () => select(e.product_id));
      body.appendChild(tr);
    }
  }

  async function refreshPush() {
    const data = await api("/admin/api/push");
    renderPush(data.endpoints);
    const detail = $("push-detail");
    const mine = data.endpoints.find((e) => e.product_id === state.selected);
    if (!mine) {
      detail.hidden = true;
      return;
    }
    const d = await api("/admin/api/push/" + encodeURIComponent(mine.product_id));
    $("push-detail-product").textContent = "(" + mine.product_id + ")";
    const dead = $("dead-letters").querySelector("tbody");
    dead.replaceChildren();
    for (const x of d.dead_letters) {
      const tr = document.createElement("tr");
      cell(tr, String(x.position), "num");
      cell(tr, x.reason);
      cell(tr, String(x.attempts), "num");
      cell(tr, x.last_error || String(x.last_status)).title = x.last_error || "";
      cell(tr, fmtTime(x.dead_at));
      cell(tr, x.retry_requested_at ? fmtTime(x.retry_requested_at) : "—");
      dead.appendChild(tr);
    }
    const att = $("attempts").querySelector("tbody");
    att.replaceChildren();
    for (const a of d.attempts) {
      const tr = document.createElement("tr");
      cell(tr, String(a.position), "num");
      cell(tr, fmtTime(a.attempted_at));
      cell(tr, a.outcome);
      cell(tr, a.status == null ? "—" : String(a.status), "num");
      cell(tr, a.duration_ms.toFixed(1), "num");
      cell(tr, a.error || "").title = a.error || "";
      att.appendChild(tr);
    }
    detail.hidden = false;
  }

  // ------------------------------------------------------------------ chart

  async function refreshRate() {
    const q = state.selected ? "?product_id=" + encodeURIComponent(state.selected) : "";
    const data = await api("/admin/api/rate" + q);
    drawChart(data);
    $("rate-summary").textContent =
      data.total + " events in the last " + Math.round(data.window / 60) + " min · average " +
      data.average_per_second.toFixed(2) + "/s · bars: events per second, " + data.step + " s buckets";
  }

  function drawChart(data) {
    const canvas = $("rate-chart");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 640;
    const h = canvas.clientHeight || 180;
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 40, bottom = 20, top = 10, right = 8;
    const plotW = w - left - right, plotH = h - top - bottom;
    const values = data.points.map((p) => p.per_second);
    const max = Math.max(1, ...values);
    // Four gridlines at a round step (1, 2 or 5 times a power of ten).
    const raw = max / 4;
    const pow = Math.pow(10, Math.floor(Math.log10(raw)));
    const tick = [1, 2, 5, 10].map((m) => m * pow).find((t) => t >= raw);
    const yMax = tick * 4;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6b6b70";
    ctx.strokeStyle = "#dcdcd8";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, y + 0.5);
      ctx.lineTo(w - right, y + 0.5);
      ctx.stroke();
      const label = tick * i;
      ctx.fillText(Number.isInteger(label) ? String(label) : label.toFixed(1), 4, y + 4);
    }
    const n = values.length || 1;
    const bw = plotW / n;
    ctx.fillStyle = "#2f6fde";
    values.forEach((v, i) => {
      const bh = (v / yMax) * plotH;
      ctx.fillRect(left + i * bw + 0.5, top + plotH - bh, Math.max(1, bw - 1), bh);
    });
    ctx.fillStyle = "#6b6b70";
    ctx.fillText("-" + Math.round(data.window / 60) + " min", left, h - 4);
    ctx.fillText("now", w - right - 22, h - 4);
    ctx.fillText("events/s", left + 4, top + 10);
  }

  // ------------------------------------------------------------------ live tail

  function select(productId) {
    if (state.selected === productId && state.source) return;
    state.selected = productId;
    renderProducts();
    $("tail-product").textContent = "(" + productId + ")";
    $("rate-scope").textContent = "(" + productId + ")";
    $("tail").querySelector("tbody").replaceChildren();
    const p = state.products.find((x) => x.product_id === productId);
    state.lastPosition = Math.max(0, (p ? p.last_position : 0) - TAIL_BACKLOG);
    connect();
    refreshRate().catch(() => {});
    refreshPush().catch(() => {});
  }

  function closeSource() {
    if (state.source) {
      state.source.close();
      state.source = null;
    }
    if (state.retry) {
      clearTimeout(state.retry);
      state.retry = null;
    }
  }

  async function connect() {
    closeSource();
    const productId = state.selected;
    const tailStatus = $("tail-status");
    tailStatus.textContent = "connecting…";
    let ticket;
    try {
      const t = await api("/admin/api/stream-ticket/" + encodeURIComponent(productId), { method: "POST" });
      ticket = t.ticket;
    } catch (err) {
      if (err.status) return showLogin("The admin token was refused.");
      tailStatus.textContent = "could not get a stream ticket; retrying";
      state.retry = setTimeout(connect, 2000);
      return;
    }
    if (productId !== state.selected) return;
    const url = "/admin/api/stream/" + encodeURIComponent(productId) +
      "?since=" + state.lastPosition + "&ticket=" + encodeURIComponent(ticket);
    const source = new EventSource(url);
    state.source = source;
    source.onopen = () => {
      tailStatus.textContent = "live · after position " + state.lastPosition;
      document.body.dataset.tail = "live";
    };
    source.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch (_) { return; }
      addFrame(frame);
    };
    source.onerror = () => {
      // Tickets expire after a minute and EventSource would reconnect with the old one:
      // reconnect ourselves with a fresh ticket, resuming after the last position seen.
      document.body.dataset.tail = "reconnecting";
      tailStatus.textContent = "reconnecting…";
      closeSource();
      state.retry = setTimeout(connect, 1000);
    };
  }

  function addFrame(frame) {
    if (typeof frame.position === "number") state.lastPosition = Math.max(state.lastPosition, frame.position);
    const body = $("tail").querySelector("tbody");
    for (const a of frame.actions || []) {
      const tr = document.createElement("tr");
      tr.className = "fresh";
      cell(tr, String(frame.position ?? ""), "num");
      cell(tr, new Date((a.timestamp_start || frame.forwarded_at) * 1000).toLocaleTimeString());
      cell(tr, a.type || "");
      cell(tr, a.title || "");
      cell(tr, frame.email || frame.user_id || "—");
      const url = cell(tr, a.raw_url || "");
      url.title = a.raw_url || "";
      body.insertBefore(tr, body.firstChild);
    }
    while (body.children.length > TAIL_MAX) body.removeChild(body.lastChild);
    $("tail-status").textContent = "live · position " + state.lastPosition;
  }

  // ------------------------------------------------------------------ start

  async function start() {
    state.token = sessionStorage.getItem(TOKEN_KEY);
    try {
      await refreshProducts();
    } catch (err) {
      if (err.status) return showLogin(state.token ? "The admin token was refused." : "");
      setStatus("receiver unavailable: " + err.message, "bad");
    }
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = !state.token;
    refreshRate().catch(() => {});
    refreshPush().catch(() => {});
    if (state.wanted && state.products.some((p) => p.product_id === state.wanted)) select(state.wanted);
    if (state.timer) return;
    state.timer = setInterval(() => {
      refreshProducts().catch((err) => {
        if (err.status) showLogin("The admin token was refused.");
        else setStatus("receiver unavailable: " + err.message, "bad");
      });
      refreshRate().catch(() => {});
      refreshPush().catch(() => {});
    }, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    takeTokenFromFragment();
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      $("token-input").value = "";
      start();
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      closeSource();
      location.reload();
    });
    start();
  });
})();
