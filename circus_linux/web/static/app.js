// circus-linux dashboard: renders /api/snapshot, follows /api/events (Server-Sent Events), draws its own
// canvas charts, and posts button actions to /api/command. Plain browser JavaScript, no build step.
"use strict";

const HISTORY = 600;            // points kept per watcher (10 minutes at one sample a second)
const SERIES = ["cpu", "rss", "procs", "restarts"];
const COLORS = { cpu: "#1e88e5", rss: "#8e24aa", procs: "#43a047", restarts: "#e53935" };
const history = new Map();      // watcher -> {cpu: [], rss: [], procs: [], restarts: []}
const cards = new Map();        // watcher -> article element
const tailLines = [];

function human(n) {
  const units = ["B", "K", "M", "G", "T"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + units[i];
}

function age(s) {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + "h" : "") + String(m).padStart(2, "0") + "m" + String(sec).padStart(2, "0") + "s";
}

function push(point) {
  for (const [name, values] of Object.entries(point.watchers)) {
    let h = history.get(name);
    if (!h) { h = { cpu: [], rss: [], procs: [], restarts: [] }; history.set(name, h); }
    for (const key of SERIES) {
      h[key].push(values[key] == null ? 0 : values[key]);
      if (h[key].length > HISTORY) h[key].shift();
    }
  }
}

function draw(canvas, values, color, fmt) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 14;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(0, ...values);
  const top = max <= 1 && fmt !== human ? 1 : Math.max(1, max * 1.1);  // never 0: no division by it
  ctx.strokeStyle = "#e6e6e6";
  ctx.beginPath(); ctx.moveTo(0, pad); ctx.lineTo(w, pad); ctx.moveTo(0, h - 1); ctx.lineTo(w, h - 1); ctx.stroke();
  if (values.length > 0) {
    ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.beginPath();
    const n = values.length, step = n > 1 ? w / (n - 1) : 0;
    values.forEach((v, i) => {
      const x = n > 1 ? i * step : w, y = h - 1 - (v / top) * (h - pad - 1);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#444"; ctx.font = "11px sans-serif";
  const last = values.length ? values[values.length - 1] : 0;
  ctx.fillText(fmt(last) + "  (max " + fmt(max) + ")", 3, 11);
  // For tests and curious users: how many points the chart holds and when it was last drawn.
  canvas.dataset.points = String(values.length);
  canvas.dataset.last = String(last);
}

async function act(name, action, card) {
  const err = card.querySelector(".error");
  err.textContent = "";
  try {
    const r = await fetch("/api/command", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ command: action, properties: { name: name } }),
    });
    const reply = await r.json();
    if (reply.status === "error") err.textContent = action + ": " + reply.reason;
  } catch (e) {
    err.textContent = action + ": " + e;
  }
}

function card(name) {
  let el = cards.get(name);
  if (el) return el;
  el = document.getElementById("watcher-tpl").content.firstElementChild.cloneNode(true);
  el.dataset.watcher = name;
  el.querySelector(".name").textContent = name;
  el.querySelectorAll("button[data-action]").forEach((b) => {
    b.addEventListener("click", () => act(name, b.dataset.action, el));
  });
  document.getElementById("watchers").appendChild(el);
  cards.set(name, el);
  const sel = document.getElementById("tail-watcher");
  const opt = document.createElement("option");
  opt.value = opt.textContent = name;
  sel.appendChild(opt);
  if (sel.options.length === 1) loadTail();
  return el;
}

function render(snap) {
  document.getElementById("clock").textContent = new Date(snap.time * 1000).toLocaleTimeString();
  const seen = new Set();
  for (const w of snap.watchers) {
    seen.add(w.name);
    const el = card(w.name);
    const st = el.querySelector(".status");
    st.textContent = w.status; st.className = "status " + w.status;
    el.querySelector(".count").textContent = w.procs.length + "/" + w.numprocesses + " workers";
    el.dataset.numprocesses = String(w.numprocesses);
    const extra = [];
    extra.push("cpu " + w.cpu.toFixed(1) + "%", "rss " + human(w.rss));
    if (w.restarts != null) extra.push("restarts " + w.restarts);
    if (w.oom_kills != null) extra.push("OOM kills " + w.oom_kills);
    el.querySelector(".figures").textContent = extra.join(" · ");
    const body = el.querySelector(".procs tbody");
    body.replaceChildren(...w.procs.map((p) => {
      const tr = document.createElement("tr");
      for (const v of [p.pid, p.wid, p.cpu.toFixed(1), human(p.rss), p.mem.toFixed(1), age(p.age)]) {
        const td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td);
      }
      return tr;
    }));
    const h = history.get(w.name);
    if (h) {
      el.querySelectorAll("canvas[data-series]").forEach((c) => {
        const key = c.dataset.series;
        draw(c, h[key], COLORS[key], key === "rss" ? human : (v) => (key === "cpu" ? v.toFixed(1) : String(v)));
      });
    }
  }
  for (const [name, el] of cards) {
    if (!seen.has(name)) { el.remove(); cards.delete(name); }
  }
  const tbody = document.querySelector("#sockets tbody");
  tbody.replaceChildren(...snap.sockets.map((s) => {
    const tr = document.createElement("tr");
    for (const v of [s.name, s.address, s.queued == null ? "–" : s.queued, s.backlog == null ? "–" : s.backlog]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td);
    }
    return tr;
  }));
}

function showTail() {
  const name = document.getElementById("tail-watcher").value;
  const lines = tailLines.filter((l) => l.watcher === name).slice(-200);
  const pre = document.getElementById("tail");
  pre.textContent = lines.length ? lines.map((l) => (l.pid ? "[" + l.pid + "] " : "") + l.line).join("\n") : "no output captured";
  pre.scrollTop = pre.scrollHeight;
}

async function loadTail() {
  const name = document.getElementById("tail-watcher").value;
  if (!name) return;
  try {
    const r = await fetch("/api/logs?name=" + encodeURIComponent(name));
    const data = await r.json();
    for (let i = tailLines.length - 1; i >= 0; i--) if (tailLines[i].watcher === name) tailLines.splice(i, 1);
    for (const l of data.lines) tailLines.push({ watcher: name, pid: l.pid, line: l.line });
  } catch (e) { /* keep what we have */ }
  showTail();
}

function connect() {
  const conn = document.getElementById("conn");
  const es = new EventSource("/api/events");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn up"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
  es.addEventListener("sample", (ev) => {
    const msg = JSON.parse(ev.data);
    push(msg.point);
    render(msg.snapshot);
  });
  es.addEventListener("output", (ev) => {
    tailLines.push(JSON.parse(ev.data));
    if (tailLines.length > 2000) tailLines.splice(0, tailLines.length - 2000);
    showTail();
  });
}

async function main() {
  document.getElementById("tail-watcher").addEventListener("change", loadTail);
  setInterval(loadTail, 30000);  // renews the server's follow lease on the watcher's output
  const r = await fetch("/api/snapshot");
  const data = await r.json();
  for (const point of data.history) push(point);
  render(data.snapshot);
  connect();
}

main();
