// vipcast status page: reads the API of the controller that serves it, and
// follows GET /v1/watch/vips (NDJSON) for changes of owner. No library.
"use strict";

const state = { vips: new Map(), history: new Map(), vpcs: [], chassis: [], replicators: [], revision: 0 };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "-" : String(c)));
  return e;
}

function clock(ms) {
  if (!ms) return "-";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").replace("Z", "").slice(0, 23);
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(path + ": " + msg);
  }
  return r.json();
}

function showError(e) {
  const p = document.getElementById("error");
  if (e) { p.textContent = String(e.message || e); p.hidden = false; } else { p.hidden = true; }
}

// A timeline of the last changes of owner: one band per owner, from its
// accepted_at to the next one's (the drill's SVG style: a colour per member).
const COLOURS = ["#2f6fb0", "#d9822b", "#2e8b57", "#8e44ad", "#b03a2e", "#16a2b8"];
function timeline(records) {
  const w = 260, h = 18, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "timeline");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  if (!records || records.length === 0) return svg;
  const ports = [...new Set(records.map(r => r.owner.port))];
  const t0 = records[0].accepted_at, t1 = Math.max(Date.now(), t0 + 1);
  const x = t => 1 + (w - 2) * (t - t0) / (t1 - t0);
  records.forEach((r, i) => {
    const end = i + 1 < records.length ? records[i + 1].accepted_at : t1;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", x(r.accepted_at));
    rect.setAttribute("width", Math.max(1, x(end) - x(r.accepted_at)));
    rect.setAttribute("y", 2);
    rect.setAttribute("height", h - 4);
    rect.setAttribute("fill", COLOURS[ports.indexOf(r.owner.port) % COLOURS.length]);
    const title = document.createElementNS(ns, "title");
    title.textContent = `generation ${r.generation}: ${r.owner.port} on ${r.owner.chassis} at ${clock(r.accepted_at)} (observed ${r.accepted_at - r.observed_at} ms before)`;
    rect.append(title);
    svg.append(rect);
  });
  return svg;
}

function renderVips(moved) {
  const body = document.querySelector("#vips tbody");
  body.replaceChildren();
  for (const v of [...state.vips.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const o = v.owner;
    const master = (v.vrrp || []).map(r => `${r.master.port} (prio ${r.priority}, VRID ${r.vrid})`).join(", ");
    const d = v.damping || {};
    let status = el("span", { class: "ok" }, "ok");
    if (v.split_brain) status = el("span", { class: "bad" }, "split brain");
    else if (d.held_until) status = el("span", { class: "warn" }, `on hold until ${clock(d.held_until)}`);
    else if (!o) status = el("span", { class: "warn" }, "no owner");
    const row = el("tr", { "data-vip": v.name, class: moved === v.name ? "moved" : "" },
      el("td", {}, v.name), el("td", { class: "mono" }, v.ip), el("td", {}, v.vpc),
      el("td", { class: "owner-port" }, o ? o.port : "-"), el("td", { class: "mono owner-mac" }, o ? o.mac : "-"),
      el("td", { class: "owner-chassis" }, o ? o.chassis : "-"), el("td", { class: "mono" }, o ? clock(o.since) : "-"),
      el("td", { class: "owner-generation" }, o ? o.generation : "-"), el("td", {}, master || "-"),
      el("td", {}, status), el("td", {}, timeline(state.history.get(v.name))));
    body.append(row);
  }
}

function renderRest() {
  const chassis = document.querySelector("#chassis tbody");
  chassis.replaceChildren(...state.chassis.map(c => {
    const l = c.liveness;
    const live = !l ? el("span", { class: "warn" }, "no heartbeat yet")
      : l.alive ? el("span", { class: "ok" }, "alive") : el("span", { class: "bad" }, "dead");
    return el("tr", { "data-chassis": c.name }, el("td", {}, c.name), el("td", {}, c.role), el("td", {}, c.dataplane),
      el("td", { class: "mono" }, c.underlay_ip), el("td", {}, live), el("td", { class: "mono" }, l ? clock(l.since_ms) : "-"));
  }));
  document.querySelector("#vpcs tbody").replaceChildren(...state.vpcs.map(v =>
    el("tr", {}, el("td", {}, v.name), el("td", {}, v.vni), el("td", {}, v.bum), el("td", {}, v.encap),
      el("td", {}, v.arp_suppression ? "yes" : "no"), el("td", {}, v.assist ? "yes" : "no"))));
  document.querySelector("#replicators tbody").replaceChildren(...state.replicators.map(r =>
    el("tr", {}, el("td", {}, r.name), el("td", { class: "mono" }, r.address))));
  document.getElementById("revision").textContent = state.revision ? `revision ${state.revision}` : "";
}

async function loadHistory(name) {
  try {
    state.history.set(name, await api(`/v1/vips/${encodeURIComponent(name)}/history?limit=20`));
  } catch (_) { /* shown on the next full load */ }
}

async function loadAll() {
  try {
    const [vips, vpcs, chassis, replicators] = await Promise.all(
      ["/v1/vips", "/v1/vpcs", "/v1/chassis", "/v1/replicators"].map(api));
    state.vips = new Map(vips.map(v => [v.name, v]));
    state.vpcs = vpcs; state.chassis = chassis; state.replicators = replicators;
    await Promise.all(vips.filter(v => !state.history.has(v.name)).map(v => loadHistory(v.name)));
    renderVips(); renderRest(); showError(null);
  } catch (e) { showError(e); }
}

// Applies one line of the VIP watch stream.
async function apply(msg) {
  if (msg.ping !== undefined) { state.revision = msg.ping; renderRest(); return; }
  if (msg.revision) state.revision = msg.revision;
  if (msg.owners) {
    for (const [name, owner] of Object.entries(msg.owners)) { const v = state.vips.get(name); if (v) v.owner = owner; }
    renderVips(); renderRest(); return;
  }
  if (msg.change) {
    const h = msg.change, v = state.vips.get(h.vip);
    if (!v) { await loadAll(); return; }
    v.owner = h.owner;
    const list = state.history.get(h.vip) || [];
    list.push(h);
    state.history.set(h.vip, list.slice(-20));
    renderVips(h.vip); renderRest();
    // Split brain, damping and the VRRP view change with it.
    try { state.vips.set(h.vip, await api(`/v1/vips/${encodeURIComponent(h.vip)}`)); renderVips(); } catch (_) { /* kept */ }
    return;
  }
  if (msg.vip) await loadAll();
}

async function follow() {
  const live = document.getElementById("live");
  let delay = 250;
  for (;;) {
    try {
      const r = await fetch("/v1/watch/vips", { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error("/v1/watch/vips: " + r.status);
      live.textContent = "live"; live.className = "live on"; delay = 250;
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i); buf = buf.slice(i + 1);
          if (line.trim()) await apply(JSON.parse(line));
        }
      }
    } catch (e) { showError(e); }
    live.textContent = "reconnecting"; live.className = "live off";
    await new Promise(res => setTimeout(res, delay));
    delay = Math.min(delay * 2, 4000);
    await loadAll();
  }
}

loadAll().then(follow);
// Liveness, the VRRP view and damping are not in the VIP stream: re-read.
setInterval(loadAll, 2000);
