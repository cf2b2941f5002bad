// cam_server live view, index page: what this server can show, each linked to its view; refreshed every 2 s
// from the ordinary REST API (no route of its own).
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const REFRESH_MS = 2000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (body.state !== "ok") throw new Error(body.status || `${path}: HTTP ${response.status}`);
  return body;
}

function fmt(value, digits = 1) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "-";
}

function table(id, title, columns, rows, empty) {
  const section = el("section", { id });
  section.append(el("h2", {}, title));
  if (!rows.length) {
    section.append(el("p", { class: "muted" }, empty));
    return section;
  }
  const head = el("tr", {}, ...columns.map((c) => el("th", {}, c)));
  const body = rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))));
  section.append(el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
  return section;
}

function viewLink(base, name) {
  return el("a", { href: `${base}/view/${encodeURIComponent(name)}`, class: "view-link" }, name);
}

function instanceRow(id, info, base) {
  const s = info.statistics || {};
  const state = info.is_running ? (info.is_stream_active ? "running" : "starting") : "stopped";
  return [viewLink(base, id), info.camera_name || "-", el("span", { class: `badge ${state}` }, state),
          fmt(s.rate), String(s.dropped ?? "-"), String(s.clients ?? "-"), info.read_only ? "shared" : "private"];
}

async function pipelineLists() {
  const [info, pipelines] = await Promise.all([getJson(`${CONFIG.api}/info`), getJson(CONFIG.api)]);
  let cameras = null;
  try {
    cameras = (await getJson(`${CONFIG.api}/camera`)).cameras;
  } catch (error) {
    cameras = error;
  }
  const active = Object.entries(info.info.active_instances || {});
  const sections = [
    table("instances", "Running instances", ["instance", "camera", "state", "rate (Hz)", "drops", "clients", "access"],
          active.map(([id, i]) => instanceRow(id, i, "")), "No instance is running."),
    table("pipelines", "Saved pipelines (the view starts the shared instance)", ["pipeline"],
          pipelines.pipelines.map((name) => [viewLink("", name)]), "No saved pipeline."),
  ];
  if (cameras instanceof Error) {
    sections.push(el("section", { id: "cameras" }, el("h2", {}, "Cameras"),
                     el("p", { class: "message error" }, `Camera server: ${cameras.message}`)));
  } else {
    sections.push(table("cameras", `Cameras (views on the camera server ${CONFIG.camera_server})`, ["camera"],
                        cameras.map((name) => [viewLink(CONFIG.camera_server, name)]), "No camera."));
  }
  return sections;
}

async function cameraLists() {
  const [info, cameras] = await Promise.all([getJson(`${CONFIG.api}/info`), getJson(CONFIG.api)]);
  const active = info.info.active_instances || {};
  const rows = cameras.cameras.map((name) => {
    const i = active[name];
    if (!i) return [viewLink("", name), el("span", { class: "badge" }, "idle"), "-", "-", "-"];
    const s = i.statistics || {};
    return [viewLink("", name), el("span", { class: "badge running" }, "streaming"), fmt(s.rate),
            String(s.dropped ?? "-"), String(s.clients ?? "-")];
  });
  return [table("cameras", "Cameras (the view starts the camera's stream)",
                ["camera", "state", "rate (Hz)", "drops", "clients"], rows, "No camera.")];
}

async function refresh() {
  const banner = document.getElementById("banner");
  try {
    const sections = CONFIG.kind === "pipeline" ? await pipelineLists() : await cameraLists();
    document.getElementById("lists").replaceChildren(...sections);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    banner.hidden = true;
  } catch (error) {
    banner.textContent = `Cannot read the server's lists: ${error.message}`;
    banner.hidden = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
