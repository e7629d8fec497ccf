// Skyburst's dashboard: zones, totals, objects per 30 s and the fleet, kept live by the
// front end's Server-Sent Events. Plain DOM: every name, label and file name goes in through
// textContent or setAttribute, never as HTML.
"use strict";

const TOKEN_KEY = "skyburst-token";
// Every 2 s: a burst on a controller checking every second (the demo's) lasts a few samples.
const FLEET_EVERY_MS = 2000;
const FLEET_HISTORY = 300; // 10 minutes of 2 s samples
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
const cards = new Map(); // zone name → card element
const fleetHistory = [];

/** fetch with the bearer token; a 401 asks for one. */
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error("a token is needed");
  }
  return response;
}

async function json(path) {
  const response = await api(path);
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function labelChips(container, labels) {
  container.replaceChildren(...labels.map((l) => {
    const chip = document.createElement("span");
    chip.textContent = l.label + " " + l.count;
    return chip;
  }));
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function zoneCard(zone) {
  let card = cards.get(zone);
  if (card) return card;
  card = $("zone-card").content.firstElementChild.cloneNode(true);
  card.dataset.zone = zone;
  card.querySelector(".zone-name").textContent = zone;
  card.querySelector(".zone-upload").addEventListener("submit", (event) => upload(event, zone));
  cards.set(zone, card);
  $("zones").append(card);
  return card;
}

async function renderZones() {
  const body = await json("/api/zones");
  $("total-images").textContent = body.totals.images;
  $("total-heads").textContent = body.totals.head_count;
  labelChips($("total-labels"), body.totals.labels);
  for (const z of body.zones) {
    const card = zoneCard(z.zone);
    card.querySelector(".zone-images").textContent = z.images;
    card.querySelector(".zone-heads").textContent = z.head_count;
    card.querySelector(".zone-last-heads").textContent = z.last_head_count;
    labelChips(card.querySelector(".zone-labels"), z.labels);
    if (card.dataset.job !== z.last_job_id) {
      card.dataset.job = z.last_job_id;
      showLatest(card, z.last_job_id).catch((e) => console.warn(e));
    }
  }
}

/** The zone's latest image with its boxes drawn over it. */
async function showLatest(card, jobId) {
  const [job, image] = await Promise.all([json("/api/jobs/" + jobId), api("/api/jobs/" + jobId + "/image")]);
  if (!image.ok || card.dataset.job !== jobId) return;
  const img = card.querySelector("img");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(await image.blob());
  img.alt = "latest image of zone " + card.dataset.zone;
  const result = job.result || { objects: [], width: 1, height: 1 };
  const boxes = card.querySelector(".boxes");
  boxes.setAttribute("viewBox", "0 0 " + result.width + " " + result.height);
  // Labels scale with the image: about 1/30 of its width, as the card shows it.
  const size = Math.max(12, Math.round(result.width / 30));
  boxes.replaceChildren(...result.objects.flatMap((o) => {
    const r = o.rectangle;
    const label = svgElement("text", { x: r.left + 3, y: Math.max(r.top - 4, size), "font-size": size });
    label.textContent = o.label + " " + Math.round(o.accuracy * 100) + "%";
    return [svgElement("rect", { x: r.left, y: r.top, width: r.width, height: r.height }), label];
  }));
}

async function renderStats() {
  const body = await json("/api/stats?bucket=30s");
  const chart = $("stats-chart");
  const buckets = body.buckets;
  const top = Math.max(1, ...buckets.map((b) => b.objects));
  const width = 600 / Math.max(1, buckets.length);
  chart.replaceChildren(...buckets.map((b, i) => {
    const height = (b.objects / top) * 110;
    const bar = svgElement("rect", { x: i * width + 1, y: 120 - height, width: Math.max(1, width - 2), height });
    const title = svgElement("title", {});
    title.textContent = b.start + ": " + b.objects + " objects, " + b.head_count + " people in " + b.images + " images";
    bar.append(title);
    return bar;
  }));
}

async function upload(event, zone) {
  event.preventDefault();
  const form = event.target;
  const status = form.querySelector(".upload-status");
  if (status) status.textContent = "uploading…";
  const data = new FormData();
  data.append("myfile", form.querySelector("input[type=file]").files[0]);
  try {
    const response = await api("/upload/" + encodeURIComponent(zone), { method: "POST", body: data });
    const body = await response.json();
    if (status) status.textContent = response.ok ? body.objects.length + " objects" : body.detail || "HTTP " + response.status;
    form.reset();
    refresh();
  } catch (e) {
    if (status) status.textContent = String(e.message || e);
  }
}

async function renderFleet() {
  const response = await api("/api/fleet");
  if (!response.ok) {
    $("fleet-legend").textContent = "no controller has reported yet (fixed fleet, or it is starting)";
    return;
  }
  const fleet = await response.json();
  const sample = { backlog: fleet.observation.backlog, pools: {} };
  for (const pool of fleet.observation.pools) {
    const count = (state) => pool.instances.filter((i) => i.state === state).length;
    sample.pools[pool.name] = { running: count("running"), pending: count("pending") };
  }
  fleetHistory.push(sample);
  if (fleetHistory.length > FLEET_HISTORY) fleetHistory.shift();
  drawFleet();
  const decisions = fleet.decisions.slice(-10).reverse();
  $("decisions").replaceChildren(...decisions.map((d) => {
    const item = document.createElement("li");
    const when = new Date(d.at_ms).toLocaleTimeString();
    const actions = describeActions(d.plan.actions);
    item.textContent = when + " · backlog " + d.backlog + " · desired " + d.decision.desired +
      (actions ? " · " + actions : "") + " · " + d.decision.reason;
    return item;
  }));
}

/** "launch private ×1, launch public ×2": a decision's actions, runs of the same grouped. */
function describeActions(actions) {
  const groups = [];
  for (const a of actions) {
    const what = a.action + " " + a.pool;
    const why = typeof a.reason === "string" ? " (" + a.reason.replace("_", "-") + ")" : a.reason ? " (stuck)" : "";
    const last = groups[groups.length - 1];
    if (last && last.what === what && last.why === why) last.count += a.count || 1;
    else groups.push({ what, why, count: a.count || 1 });
  }
  return groups.map((g) => g.what + " ×" + g.count + g.why).join(", ");
}

function drawFleet() {
  const names = [...new Set(fleetHistory.flatMap((s) => Object.keys(s.pools)))];
  const series = [{ name: "backlog", colour: "#777", values: fleetHistory.map((s) => s.backlog) }];
  const colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
  names.forEach((name, i) => {
    for (const state of ["running", "pending"]) {
      series.push({
        name: name + " " + state,
        colour: colours[i % colours.length],
        dashed: state === "pending",
        values: fleetHistory.map((s) => (s.pools[name] || {})[state] || 0),
      });
    }
  });
  const top = Math.max(1, ...series.flatMap((s) => s.values));
  const step = 600 / Math.max(1, FLEET_HISTORY - 1);
  $("fleet-chart").replaceChildren(...series.map((s) => svgElement("polyline", {
    points: s.values.map((v, i) => i * step + "," + (118 - (v / top) * 110)).join(" "),
    fill: "none", stroke: s.colour, "stroke-width": 2, "stroke-dasharray": s.dashed ? "4 3" : "none",
    "vector-effect": "non-scaling-stroke",
  })));
  $("fleet-legend").replaceChildren(...series.map((s) => {
    const entry = document.createElement("span");
    entry.style.color = s.colour;
    entry.textContent = s.name + " " + s.values[s.values.length - 1];
    return entry;
  }));
}

let refreshing = null;
/** Zones and stats again, at most every 300 ms however many events arrive. */
function refresh() {
  if (refreshing) return;
  refreshing = setTimeout(() => {
    refreshing = null;
    renderZones().catch((e) => console.warn(e));
    renderStats().catch((e) => console.warn(e));
  }, 300);
}

function connect() {
  // EventSource cannot send headers: the token travels as a query parameter on this route.
  const url = "/api/events" + (token ? "?access_token=" + encodeURIComponent(token) : "");
  const events = new EventSource(url);
  const state = (text, name) => { $("connection").textContent = text; $("connection").dataset.state = name; };
  events.onopen = () => { state("live", "live"); refresh(); };
  // The browser reconnects by itself, sending Last-Event-ID: the stream replays what it missed.
  events.onerror = () => state("reconnecting…", "reconnecting");
  events.addEventListener("job", (event) => {
    document.body.dataset.lastEvent = event.lastEventId;
    refresh();
  });
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-form").hidden = true;
  start();
});
$("new-zone").addEventListener("submit", (event) => upload(event, event.target.elements.zone.value.trim()));

async function start() {
  try {
    await renderZones();
  } catch (e) {
    console.warn(e);
    return; // waiting for a token
  }
  renderStats().catch((e) => console.warn(e));
  renderFleet().catch((e) => console.warn(e));
  setInterval(() => renderFleet().catch((e) => console.warn(e)), FLEET_EVERY_MS);
  connect();
}

start();
