// iiotbed dashboard: polls /api/live every second and redraws. No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const runId = params.get("run_id");
const SVG = "http://www.w3.org/2000/svg";

function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + " %"; }
function num(x, d = 1) { return x === null || x === undefined ? "-" : Number(x).toFixed(d); }
function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function simTime(t) {
  const d = Math.floor(t / 86400), h = Math.floor((t % 86400) / 3600), m = Math.floor((t % 3600) / 60);
  return `day ${d + 1} ${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")} (${t.toFixed(0)} s)`;
}

function dur(x) {
  if (x === null || x === undefined) return "-";
  if (x < 60) return `${x.toFixed(0)} s`;
  if (x < 3600) return `${Math.floor(x / 60)} min`;
  const h = Math.floor(x / 3600), m = Math.floor((x % 3600) / 60);
  return h < 48 ? `${h} h ${String(m).padStart(2, "0")} min` : `${(x / 86400).toFixed(1)} d`;
}

// ISO 22400-2 performance is ideal cycle time x produced / APT: it passes 100 % only when
// units came faster than the ideal cycle time, which a short window can show by chance
const OVER_100 = "Above 100 %: by ISO 22400-2, performance = ideal cycle time x units " +
  "produced / actual production time. Over a short window a few cycles that ran faster " +
  "than the ideal cycle time (or a unit whose cycle began before the window) can lift it " +
  "past 100 %; over hours of production it cannot, so a lasting value above 100 % means the " +
  "ideal cycle time is set too long.";

function ratio(label, x, cls) {
  const span = el("span", { class: cls }, `${label} ${pct(x)}`);
  if (x !== null && x !== undefined && x > 1) {
    span.classList.add("over");
    span.setAttribute("title", OVER_100);
  }
  return span;
}

// the KPI engine's time elements per column: executing (APT), fault, other planned, unplanned
function drawTimeline(cols) {
  const svg = el("svg:svg", { class: "timeline", viewBox: "0 0 100 10", preserveAspectRatio: "none" });
  if (!cols.length) return svg;
  const t0 = cols[0][0], last = cols[cols.length - 1], t1 = last[0] + last[1];
  const w = 100 / Math.max(1e-9, t1 - t0);
  for (const [t, span, pbt, apt, fault] of cols) {
    const x = (t - t0) * w, width = span * w;
    let y = 0;
    for (const [v, colour] of [[apt, "#2e9d5b"], [Math.max(0, pbt - apt - fault), "#e0a020"], [fault, "#d2423b"], [Math.max(0, span - pbt), "#c9cdd4"]]) {
      const h = (10 * v) / span;
      if (h > 0) svg.append(el("svg:rect", { x, y, width, height: h, fill: colour }));
      y += h;
    }
    const tip = el("svg:title", {}, `${simTime(t)}: executing ${pct(apt / span)}, other planned ${pct(Math.max(0, pbt - apt - fault) / span)}, fault ${pct(fault / span)}, not planned ${pct(Math.max(0, span - pbt) / span)}`);
    const hit = el("svg:rect", { x, y: 0, width, height: 10, fill: "transparent" });
    hit.append(tip);
    svg.append(hit);
  }
  return svg;
}

function drawStations(stations) {
  const box = $("stations");
  box.replaceChildren();
  for (const s of stations) {
    const cls = s.state === null ? "st-x" : `st-${s.state}`;
    const div = el("div", { class: `station ${cls}`, "data-path": s.path, title: s.path });
    div.append(el("div", { class: "name" }, s.name));
    const since = s.in_state_s === null || s.in_state_s === undefined ? "" : ` for ${dur(s.in_state_s)}`;
    div.append(el("div", { class: "kpi state" }, `${s.stage} · ${s.state_name || "unknown"}${since}${s.fault ? " · FAULT" : ""}`));
    div.append(el("div", { class: "oee" }, "OEE " + pct(s.kpis.oee)));
    const apq = el("div", { class: "kpi" });
    apq.append(ratio("A", s.kpis.availability, "a"), " · ", ratio("P", s.kpis.performance, "p"), " · ", ratio("Q", s.kpis.quality, "q"));
    div.append(apq);
    div.append(el("div", { class: "kpi processed" }, `processed ${s.processed ?? "-"}`));
    div.append(drawTimeline(s.timeline || []));
    box.append(div);
  }
}

function drawThroughput(points, t) {
  const svg = $("throughput");
  svg.replaceChildren();
  $("throughput-max").textContent = "";
  $("throughput-range").textContent = points.length ? `${simTime(0)} to ${simTime(t)}` : "no production yet";
  if (!points.length) return;
  const W = 600, H = 160, pad = 4;
  const maxV = Math.max(1, ...points.map((p) => p.units_per_h));
  const x = (tt) => pad + (tt / Math.max(1, t)) * (W - 2 * pad);
  const y = (v) => H - pad - (v / maxV) * (H - 2 * pad - 14);
  // each column's rate, drawn at the middle of the time it covers
  const mid = (p) => p.t + p.span / 2;
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(mid(p)).toFixed(1)},${y(p.units_per_h).toFixed(1)}`).join(" ");
  svg.append(el("svg:path", { d, fill: "none", stroke: "#2e6fd8", "stroke-width": 2 }));
  for (const p of points) {
    const c = el("svg:circle", { class: "point", cx: x(mid(p)).toFixed(1), cy: y(p.units_per_h).toFixed(1), r: 2.5, fill: "#2e6fd8", "data-t": p.t, "data-span": p.span, "data-units": p.units });
    c.append(el("svg:title", {}, `${simTime(p.t)} + ${dur(p.span)}: ${p.units} good units (${p.units_per_h.toFixed(1)} units/h)`));
    svg.append(c);
  }
  $("throughput-max").textContent = `max ${maxV.toFixed(1)} units/h`;
}

function drawAmrs(amrs) {
  const svg = $("amr-map"), list = $("amr-list");
  svg.replaceChildren();
  list.replaceChildren();
  if (!amrs.length) { list.append(el("div", { class: "dim" }, "no AMRs in this run")); return; }
  const xs = amrs.map((a) => a.x ?? 0), ys = amrs.map((a) => a.y ?? 0);
  const maxX = Math.max(10, ...xs), maxY = Math.max(10, ...ys);
  for (const a of amrs) {
    const cx = 10 + ((a.x ?? 0) / maxX) * 280, cy = 140 - ((a.y ?? 0) / maxY) * 130;
    svg.append(el("svg:circle", { cx, cy, r: 6, fill: "#2e6fd8" }));
    svg.append(el("svg:text", { x: cx + 8, y: cy + 4, "font-size": 10 }, a.name));
    const row = el("div", { class: "amr-row" });
    row.append(el("span", {}, a.name));
    const bat = el("div", { class: "battery" });
    bat.append(el("div", { style: `width:${Math.max(0, Math.min(100, a.battery ?? 0))}%` }));
    row.append(bat);
    row.append(el("span", { class: "small" }, `${num(a.battery, 0)} %`));
    list.append(row);
  }
}

function drawGoal(goal) {
  const bar = $("goal-bar"), mark = $("goal-mark");
  const scale = Math.max(0.4, 2 * (goal.goal || 0.2));
  mark.style.left = `${(100 * (goal.goal || 0.2)) / scale}%`;
  if (!goal.available) {
    $("goal-text").textContent = `${goal.metric}: ${goal.reason || "not available"}`;
    bar.style.width = "0";
    $("goal-detail").textContent = goal.value !== null && goal.value !== undefined ? `now ${num(goal.value, 3)}` : "";
    return;
  }
  const imp = goal.improvement;
  $("goal-text").textContent = `${goal.metric} ${imp >= 0 ? "+" : ""}${(100 * imp).toFixed(1)} % vs baseline (goal +${(100 * goal.goal).toFixed(0)} %)`;
  bar.style.width = `${Math.max(0, Math.min(100, (100 * imp) / scale))}%`;
  bar.classList.toggle("met", imp >= goal.goal);
  $("goal-detail").textContent = `now ${num(goal.value, 3)} · baseline ${num(goal.baseline, 3)} (${goal.baseline_source})`;
}

function render(s) {
  $("scenario").textContent = s.run.scenario;
  $("run-id").textContent = s.run.run_id;
  $("sim-time").textContent = simTime(s.t);
  $("source").textContent = s.source || "-";
  const ing = s.ingest;
  $("ingest").textContent = ing ? `${ing.connected ? "connected" : "offline"}, ${ing.stored} stored, ${ing.duplicates} dup, ${ing.malformed} bad, lag ${num(ing.lag_s * 1000, 0)} ms` : "off";
  $("line-path").textContent = s.line.path || "";
  const k = s.line.kpis || {};
  $("line-oee").textContent = pct(k.oee);
  $("line-a").textContent = pct(k.availability);
  $("line-p").textContent = pct(k.performance);
  $("line-p").classList.toggle("over", k.performance > 1);
  $("line-p").title = k.performance > 1 ? OVER_100 : "";
  $("line-q").textContent = pct(k.quality);
  $("line-good").textContent = s.line.good ?? "-";
  $("line-lp").textContent = k.labour_productivity === null || k.labour_productivity === undefined ? "-" : `${num(k.labour_productivity, 2)} units/h`;
  $("tech-busy").textContent = s.technicians.busy ?? "-";
  $("tech-count").textContent = s.technicians.count ?? "-";
  drawStations(s.stations);
  drawThroughput(s.throughput, s.t);
  drawAmrs(s.amrs);
  drawGoal(s.goal);
  document.body.dataset.loaded = "true";
}

async function poll() {
  try {
    const r = await fetch("/api/live" + (runId ? `?run_id=${encodeURIComponent(runId)}` : ""));
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    render(body);
    $("error").textContent = "";
  } catch (e) {
    $("error").textContent = String(e.message || e);
  } finally {
    setTimeout(poll, 1000);
  }
}
poll();
