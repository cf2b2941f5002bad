// cam_server live view of one camera / pipeline instance (message format: docs/live_view.md).
// The server sends the visible region binned to this canvas as 8-bit levels; the colormap, zoom/pan and the
// overlays are drawn here. Controls change the instance through the ordinary REST API.
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const imageCanvas = $("image");
const overlayCanvas = $("overlay");
const COLORS = { profiles: "#00e5ff", fits: "#ffd400", center_of_mass: "#ff00ff", roi: "#ff8c00",
                 good_region: "#39ff14", slices: "#ff3030" };
const STALE_MS = 3000;          // no frame for this long while "running": the image is marked stale
const PROFILE_FRACTION = 0.2;   // profiles use this part of the image's height / width
const PANEL_KEYS = [            // the side panel's first rows (then every other scalar the instance sends)
  ["x_center_of_mass", "centre of mass x"], ["y_center_of_mass", "centre of mass y"],
  ["x_fit_mean", "fit mean x"], ["y_fit_mean", "fit mean y"],
  ["x_fit_standard_deviation", "fit sigma x"], ["y_fit_standard_deviation", "fit sigma y"],
  ["x_fit_amplitude", "fit amplitude x"], ["y_fit_amplitude", "fit amplitude y"],
  ["x_fwhm", "FWHM x"], ["y_fwhm", "FWHM y"], ["x_rms", "rms x"], ["y_rms", "rms y"],
  ["intensity", "intensity"], ["min_value", "min"], ["max_value", "max"],
];
// Position-like values and their pixel equivalent (units "pixels"), from the overlays.
const PIXEL_VALUES = {
  x_center_of_mass: (o) => o.center_of_mass?.[0], y_center_of_mass: (o) => o.center_of_mass?.[1],
  x_fit_mean: (o) => o.fit?.[0], y_fit_mean: (o) => o.fit?.[1],
  x_fit_standard_deviation: (o) => o.fit?.[2], y_fit_standard_deviation: (o) => o.fit?.[3],
};

const state = {
  socket: null, lut: null, colormaps: {}, frame: null, source: document.createElement("canvas"),
  status: { state: "starting" }, lastFrameAt: 0, frames: [], fit: true, scale: 1, ox: 0, oy: 0,
  drag: null, roiMode: false, probeAt: 0, cursor: null, viewSent: "", imageSize: null, busy: false,
};

// --- WebSocket -------------------------------------------------------------------------------------------------
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/view/${encodeURIComponent(CONFIG.name)}/ws`);
  socket.binaryType = "arraybuffer";
  state.socket = socket;
  socket.onopen = () => { state.viewSent = ""; sendView(); };
  socket.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) onFrame(event.data); else onText(JSON.parse(event.data));
  };
  socket.onclose = () => {
    state.socket = null;
    setStatus({ state: "error", error: "Connection to the server lost; reconnecting ..." });
    setTimeout(connect, 2000);
  };
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(message));
}

function onText(message) {
  if (message.type === "status") setStatus(message.status);
  else if (message.type === "probe") showProbe(message);
  else if (message.type === "record") showRecording(message);
  else if (message.type === "error") showMessage("controls-message", message.message, true);
}

function onFrame(buffer) {
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const pixels = new Uint8Array(buffer, 4 + length);
  state.frame = { header, pixels };
  state.lastFrameAt = performance.now();
  state.frames.push(state.lastFrameAt);
  if (header.image_size) {
    const [w, h] = header.image_size;
    if (!state.imageSize || state.imageSize[0] !== w || state.imageSize[1] !== h) {
      state.imageSize = [w, h];
      if (state.fit) fitImage();
    }
    colorize();
  }
  $("pulse-id").textContent = header.pulse_id;
  overlayCanvas.dataset.seq = header.seq;
  overlayCanvas.dataset.pulseId = header.pulse_id;
  draw();
  updatePanel();
  send({ type: "ack", seq: header.seq });
}

// --- the image -------------------------------------------------------------------------------------------------
function colorize() {
  const { header, pixels } = state.frame;
  const source = state.source;
  if (source.width !== header.width || source.height !== header.height) {
    source.width = header.width;
    source.height = header.height;
  }
  const ctx = source.getContext("2d");
  const image = ctx.createImageData(header.width, header.height);
  const out = new Uint32Array(image.data.buffer);
  const lut = state.lut;
  for (let i = 0; i < pixels.length; i++) out[i] = lut[pixels[i]];
  ctx.putImageData(image, 0, 0);
}

function setColormap(name) {
  const table = state.colormaps[name];
  const lut = new Uint32Array(256);
  const bytes = new Uint8Array(lut.buffer);
  for (let i = 0; i < 256; i++) bytes.set([table[i][0], table[i][1], table[i][2], 255], i * 4);
  state.lut = lut;
  if (state.frame?.header.image_size) { colorize(); draw(); }
}

function resizeCanvases() {
  const dpr = window.devicePixelRatio || 1;
  for (const canvas of [imageCanvas, overlayCanvas]) {
    const w = Math.round(canvas.clientWidth * dpr), h = Math.round(canvas.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  }
  if (state.fit) fitImage();
  draw();
}

function fitImage() {
  state.fit = true;
  if (!state.imageSize) return;
  const [w, h] = state.imageSize;
  const cw = imageCanvas.clientWidth, ch = imageCanvas.clientHeight;
  state.scale = Math.min(cw / w, ch / h);
  state.ox = (cw - w * state.scale) / 2;
  state.oy = (ch - h * state.scale) / 2;
  viewChanged();
}

function zoomAt(factor, cx, cy) {
  const scale = Math.min(Math.max(state.scale * factor, 0.01), 64);
  factor = scale / state.scale;
  state.ox = cx - (cx - state.ox) * factor;
  state.oy = cy - (cy - state.oy) * factor;
  state.scale = scale;
  state.fit = false;
  viewChanged();
}

// Image pixel (continuous coordinates: pixel i spans [i, i+1)) <-> canvas CSS pixels.
const toCanvas = (x, y) => [state.ox + x * state.scale, state.oy + y * state.scale];
const toImage = (cx, cy) => [(cx - state.ox) / state.scale, (cy - state.oy) / state.scale];

function viewChanged() {
  overlayCanvas.dataset.transform = JSON.stringify({ scale: state.scale, ox: state.ox, oy: state.oy });
  $("zoom").textContent = `zoom ${(state.scale * 100).toFixed(0)}%`;
  draw();
  clearTimeout(state.viewTimer);
  state.viewTimer = setTimeout(sendView, 80);
}

function sendView() {
  const dpr = window.devicePixelRatio || 1;
  const message = { type: "view", rate: Number($("max-rate").value), min: null, max: null,
                    width: Math.max(1, Math.round(imageCanvas.clientWidth * dpr)),
                    height: Math.max(1, Math.round(imageCanvas.clientHeight * dpr)) };
  if (!$("auto-levels").checked) {
    const low = parseFloat($("level-min").value), high = parseFloat($("level-max").value);
    if (isFinite(low) && isFinite(high)) { message.min = low; message.max = high; }
  }
  if (state.imageSize) {
    const [w, h] = state.imageSize;
    const [x0, y0] = toImage(0, 0);
    const [x1, y1] = toImage(imageCanvas.clientWidth, imageCanvas.clientHeight);
    const left = Math.max(0, Math.floor(x0)), top = Math.max(0, Math.floor(y0));
    const right = Math.min(w, Math.ceil(x1)), bottom = Math.min(h, Math.ceil(y1));
    if (right > left && bottom > top) {
      Object.assign(message, { x: left, y: top, w: right - left, h: bottom - top,
                               width: Math.max(1, Math.round((right - left) * state.scale * dpr)),
                               height: Math.max(1, Math.round((bottom - top) * state.scale * dpr)) });
    }
  }
  const text = JSON.stringify(message);
  if (text !== state.viewSent) { state.viewSent = text; send(message); }
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const ctx = imageCanvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, imageCanvas.width, imageCanvas.height);
  const header = state.frame?.header;
  if (header?.region) {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.imageSmoothingEnabled = state.scale < 1;
    const [rx, ry, rw, rh] = header.region;
    const [cx, cy] = toCanvas(rx, ry);
    ctx.drawImage(state.source, 0, 0, header.width, header.height, cx, cy, rw * state.scale, rh * state.scale);
  }
  drawOverlays();
}

// --- overlays --------------------------------------------------------------------------------------------------
function overlayOn(name) {
  return document.querySelector(`[data-overlay="${name}"]`).checked;
}

function drawOverlays() {
  const dpr = window.devicePixelRatio || 1;
  const ctx = overlayCanvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, overlayCanvas.width, overlayCanvas.height);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  delete overlayCanvas.dataset.com;
  const header = state.frame?.header;
  if (header?.image_size) {
    const o = header.overlays || {};
    if (overlayOn("roi") && o.roi) drawRoi(ctx, o.roi, header.image_size);
    if (overlayOn("good_region") && o.good_region) drawGoodRegion(ctx, o.good_region);
    if (overlayOn("slices") && o.slices) drawSlices(ctx, o.slices);
    drawProfiles(ctx, header);
    if (overlayOn("center_of_mass") && o.center_of_mass) drawCross(ctx, o.center_of_mass);
  }
  if (state.drag?.roi) drawRoiDrag(ctx);
}

function drawCross(ctx, [x, y]) {
  if (x === null || y === null) return;
  const [cx, cy] = toCanvas(x + 0.5, y + 0.5);   // the centre of pixel x, y
  const px = Math.floor(cx) + 0.5, py = Math.floor(cy) + 0.5;   // crisp one-pixel lines through that pixel
  ctx.strokeStyle = COLORS.center_of_mass;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(px - 12, py); ctx.lineTo(px + 13, py);
  ctx.moveTo(px, py - 12); ctx.lineTo(px, py + 13);
  ctx.stroke();
  overlayCanvas.dataset.com = `${cx},${cy}`;
}

function strokeRect(ctx, color, x0, y0, x1, y1, dash = []) {
  const [ax, ay] = toCanvas(x0, y0), [bx, by] = toCanvas(x1, y1);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.setLineDash(dash);
  ctx.strokeRect(ax, ay, bx - ax, by - ay);
  ctx.setLineDash([]);
  return [ax, ay];
}

function drawRoi(ctx, roi, [w, h]) {
  // The image of a pipeline with a ROI is that ROI: its border, labelled with the ROI of the original image.
  const [ax, ay] = strokeRect(ctx, COLORS.roi, 0, 0, w, h, [6, 4]);
  ctx.fillStyle = COLORS.roi;
  ctx.fillText(`ROI x ${roi[0]} w ${roi[1]} y ${roi[2]} h ${roi[3]}`, ax + 4, ay + 12);
}

function drawGoodRegion(ctx, [xs, ys, xe, ye]) {
  strokeRect(ctx, COLORS.good_region, xs, ys, xe, ye, [3, 3]);
}

function drawSlices(ctx, slices) {
  ctx.strokeStyle = COLORS.slices;
  ctx.fillStyle = COLORS.slices;
  ctx.lineWidth = 1.5;
  const vertical = slices.orientation !== "horizontal";
  for (const [x, y, sigma] of slices.items) {
    const [cx, cy] = toCanvas(x + 0.5, y + 0.5);
    const half = (sigma || 0) * state.scale, band = ((slices.length || 0) / 2) * state.scale;
    ctx.beginPath();
    if (vertical) { ctx.moveTo(cx - half, cy); ctx.lineTo(cx + half, cy); }
    else { ctx.moveTo(cx, cy - half); ctx.lineTo(cx, cy + half); }
    ctx.stroke();
    ctx.fillRect(cx - 2, cy - 2, 4, 4);
    if (band) {
      ctx.setLineDash([2, 3]);
      if (vertical) ctx.strokeRect(cx - half, cy - band, 2 * half, 2 * band);
      else ctx.strokeRect(cx - band, cy - half, 2 * band, 2 * half);
      ctx.setLineDash([]);
    }
  }
}

function drawProfiles(ctx, header) {
  const profiles = header.profiles || {};
  const [w, h] = header.image_size;
  const [rx, ry] = header.region;
  const [bx, by] = header.bin;
  // Along the edges of the visible part of the image, scaled to a fraction of its size.
  const [x0, y0] = toCanvas(0, 0), [x1, y1] = toCanvas(w, h);
  const left = Math.max(x0, 0), top = Math.max(y0, 0);
  const right = Math.min(x1, imageCanvas.clientWidth), bottom = Math.min(y1, imageCanvas.clientHeight);
  const height = (bottom - top) * PROFILE_FRACTION, width = (right - left) * PROFILE_FRACTION;
  const curves = [["profile", "profiles"], ["fit", "fits"]];
  for (const [kind, overlay] of curves) {
    if (!overlayOn(overlay)) continue;
    ctx.strokeStyle = COLORS[overlay];
    ctx.lineWidth = 1.2;
    const x = profiles.x?.[kind];
    if (x) {
      ctx.beginPath();
      x.forEach((v, i) => {
        const [cx] = toCanvas(rx + (i + 0.5) * bx, 0);
        const cy = bottom - (v / 1000) * height;
        if (i) ctx.lineTo(cx, cy); else ctx.moveTo(cx, cy);
      });
      ctx.stroke();
    }
    const y = profiles.y?.[kind];
    if (y) {
      ctx.beginPath();
      y.forEach((v, i) => {
        const [, cy] = toCanvas(0, ry + (i + 0.5) * by);
        const cx = left + (v / 1000) * width;
        if (i) ctx.lineTo(cx, cy); else ctx.moveTo(cx, cy);
      });
      ctx.stroke();
    }
  }
}

function drawRoiDrag(ctx) {
  const { x0, y0, x1, y1 } = state.drag;
  ctx.strokeStyle = COLORS.roi;
  ctx.lineWidth = 1.5;
  ctx.setLineDash([4, 3]);
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.setLineDash([]);
}

// --- mouse: zoom, pan, ROI, readout ----------------------------------------------------------------------------
function canvasPoint(event) {
  const rect = overlayCanvas.getBoundingClientRect();
  return [event.clientX - rect.left, event.clientY - rect.top];
}

overlayCanvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  const [cx, cy] = canvasPoint(event);
  zoomAt(event.deltaY < 0 ? 1.25 : 0.8, cx, cy);
}, { passive: false });

overlayCanvas.addEventListener("mousedown", (event) => {
  const [x, y] = canvasPoint(event);
  const roi = state.roiMode || event.shiftKey;
  state.drag = { roi, x0: x, y0: y, x1: x, y1: y, ox: state.ox, oy: state.oy };
});

window.addEventListener("mousemove", (event) => {
  const [x, y] = canvasPoint(event);
  if (state.drag) {
    state.drag.x1 = x;
    state.drag.y1 = y;
    if (!state.drag.roi) {
      state.ox = state.drag.ox + (x - state.drag.x0);
      state.oy = state.drag.oy + (y - state.drag.y0);
      state.fit = false;
      viewChanged();
    } else {
      drawOverlays();
    }
  }
  if (event.target === overlayCanvas) probeAt(x, y);
});

window.addEventListener("mouseup", () => {
  const drag = state.drag;
  state.drag = null;
  if (drag?.roi) {
    drawOverlays();
    applyRoi(drag);
  }
});

overlayCanvas.addEventListener("dblclick", fitImage);
overlayCanvas.addEventListener("mouseleave", () => { state.cursor = null; $("readout").textContent = "-"; });

function probeAt(cx, cy) {
  const [x, y] = toImage(cx, cy);
  state.cursor = [Math.floor(x), Math.floor(y)];
  const now = performance.now();
  if (now - state.probeAt > 50) {
    state.probeAt = now;
    send({ type: "probe", x: state.cursor[0], y: state.cursor[1] });
  }
}

function showProbe(message) {
  if (message.value === null) { $("readout").textContent = `x ${message.x}  y ${message.y}  (outside)`; return; }
  const cal = message.x_cal === null ? "" : `  |  calibrated x ${num(message.x_cal)}  y ${num(message.y_cal)}`;
  $("readout").textContent = `x ${message.x}  y ${message.y}  value ${num(message.value)}${cal}`;
}

// --- status, panel ---------------------------------------------------------------------------------------------
function num(value, digits = 4) {
  if (typeof value !== "number" || !isFinite(value)) return value ?? "-";
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1e5 || (Math.abs(value) < 1e-3 && value !== 0) ? value.toExponential(3)
    : value.toFixed(Math.max(0, digits - Math.max(0, Math.floor(Math.log10(Math.abs(value) || 1)))));
}

function setStatus(status) {
  state.status = status;
  const badge = $("state");
  badge.textContent = status.state;
  badge.className = `badge ${status.state}`;
  document.body.dataset.state = status.state;
  $("rate").textContent = typeof status.rate === "number" ? status.rate.toFixed(1) : "-";
  $("drops").textContent = status.dropped ?? "-";
  $("clients").textContent = status.clients ?? "-";
  const banner = $("banner");
  const error = status.error || (status.last_error ? `last error: ${status.last_error}` : null);
  banner.hidden = !error;
  banner.textContent = error || "";
  banner.className = status.state === "running" ? "warn" : "";
  updateControls();
  checkStale();
}

function checkStale() {
  const running = state.status.state === "running";
  const late = state.frame && performance.now() - state.lastFrameAt > STALE_MS;
  const stale = !running || late;
  imageCanvas.classList.toggle("stale", Boolean(stale && state.frame));
  if (running && late && !state.status.error) {
    const banner = $("banner");
    banner.hidden = false;
    banner.className = "warn";
    banner.textContent = `No frame for ${((performance.now() - state.lastFrameAt) / 1000).toFixed(0)} s` +
      (state.status.config?.paused ? " (paused)" : "");
  }
  const now = performance.now();
  state.frames = state.frames.filter((t) => now - t < 2000);
  $("fps").textContent = (state.frames.length / 2).toFixed(1);
}
setInterval(checkStale, 500);

function updatePanel() {
  const header = state.frame.header;
  const values = header.values || {};
  const pixels = $("units").value === "pixels";
  const rows = [];
  const shown = new Set();
  const value = (key) => {
    if (pixels && PIXEL_VALUES[key]) {
      const v = PIXEL_VALUES[key](header.overlays || {});
      return v === undefined || v === null ? "-" : `${num(v)} px`;
    }
    return num(values[key]);
  };
  for (const [key, label] of PANEL_KEYS) {
    if (key in values) { rows.push([label, value(key), key]); shown.add(key); }
  }
  const body = document.createElement("tbody");
  for (const [label, v, key] of rows) body.append(row(label, v, key));
  $("values").replaceChildren(body);
  const others = document.createElement("tbody");
  for (const key of Object.keys(values)) if (!shown.has(key)) others.append(row(key, value(key), key));
  $("other-values").replaceChildren(others);
  const roi = header.parameters?.image_region_of_interest;
  $("roi-text").textContent = roi ? `[${roi.join(", ")}]` : "none";
}

function row(label, value, key) {
  const tr = document.createElement("tr");
  tr.dataset.key = key;
  const a = document.createElement("td"), b = document.createElement("td");
  a.textContent = label;
  b.textContent = value;
  tr.append(a, b);
  return tr;
}

// --- controls through the REST API -----------------------------------------------------------------------------
const CONTROL_IDS = ["threshold", "threshold-apply", "roi-draw", "roi-reset", "background-enable", "background-n",
                     "background-collect", "averaging", "averaging-apply", "paused"];

function updateControls() {
  const status = state.status;
  const reason = status.controls;
  for (const id of CONTROL_IDS) $(id).disabled = Boolean(reason) || state.busy;
  $("controls-reason").hidden = !reason;
  $("controls-reason").textContent = reason ? `Controls disabled: ${reason}.` : "";
  if (reason && state.roiMode) setRoiMode(false);
  const config = status.config;
  if (!config) return;
  const focused = document.activeElement;
  if (focused !== $("threshold")) $("threshold").value = config.image_threshold ?? "";
  if (focused !== $("averaging")) $("averaging").value = config.averaging ?? "";
  $("background-enable").checked = Boolean(config.image_background_enable);
  $("background-id").textContent = config.image_background ? `(${config.image_background})` : "(none collected)";
  $("paused").checked = Boolean(config.paused);
}

function showMessage(id, text, error = false) {
  const node = $(id);
  node.textContent = text || "";
  node.className = `message${error ? " error" : ""}`;
}

async function rest(method, path, body) {
  const response = await fetch(path, { method, headers: body ? { "Content-Type": "application/json" } : {},
                                       body: body ? JSON.stringify(body) : undefined });
  const answer = await response.json();
  if (answer.state !== "ok") throw new Error(answer.status || `HTTP ${response.status}`);
  return answer;
}

async function setConfig(change, what) {
  try {
    const answer = await rest("POST", `${CONFIG.api}/instance/${encodeURIComponent(CONFIG.name)}/config`, change);
    showMessage("controls-message", `${what}: done`);
    state.status = { ...state.status, config: answer.config };
    updateControls();
  } catch (error) {
    showMessage("controls-message", `${what}: ${error.message}`, true);
  }
}

function numberOrNull(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

$("threshold-apply").onclick = () => setConfig({ image_threshold: numberOrNull("threshold") }, "threshold");
$("averaging-apply").onclick = () => {
  const n = numberOrNull("averaging");
  setConfig({ averaging: n && n > 1 ? n : null }, "averaging");
};
$("paused").onchange = (e) => setConfig({ paused: e.target.checked }, e.target.checked ? "pause" : "resume");
$("background-enable").onchange = (e) => {
  if (e.target.checked && !state.status.config?.image_background) {
    e.target.checked = false;
    showMessage("controls-message", "background: collect one first", true);
    return;
  }
  setConfig({ image_background_enable: e.target.checked }, "background");
};
$("roi-reset").onclick = () => setConfig({ image_region_of_interest: null }, "ROI reset");
$("roi-draw").onclick = () => setRoiMode(!state.roiMode);

function setRoiMode(on) {
  state.roiMode = on;
  $("roi-draw").classList.toggle("active", on);
  overlayCanvas.classList.toggle("roi-mode", on);
}

function applyRoi(drag) {
  setRoiMode(false);
  const header = state.frame?.header;
  if (!header?.image_size || state.status.controls) return;
  const [w, h] = header.image_size;
  const clamp = (v, max) => Math.min(Math.max(v, 0), max);
  const [ax, ay] = toImage(Math.min(drag.x0, drag.x1), Math.min(drag.y0, drag.y1));
  const [bx, by] = toImage(Math.max(drag.x0, drag.x1), Math.max(drag.y0, drag.y1));
  const x0 = Math.round(clamp(ax, w)), y0 = Math.round(clamp(ay, h));
  const x1 = Math.round(clamp(bx, w)), y1 = Math.round(clamp(by, h));
  if (x1 - x0 < 2 || y1 - y0 < 2) { showMessage("controls-message", "ROI: drag a larger rectangle", true); return; }
  // The frame shown is already cut to the current ROI: the new one is relative to the original image.
  const current = header.parameters?.image_region_of_interest || [0, 0, 0, 0];
  const roi = [current[0] + x0, x1 - x0, current[2] + y0, y1 - y0];
  setConfig({ image_region_of_interest: roi }, `ROI [${roi.join(", ")}]`);
}

$("background-collect").onclick = async () => {
  const camera = state.status.camera_name;
  const n = Math.max(1, Math.round(numberOrNull("background-n") || 10));
  if (!camera) { showMessage("controls-message", "background: this instance has no camera", true); return; }
  const bar = $("background-progress");
  // The REST call answers when done; the bar estimates its progress from the camera's frame rate.
  const rate = state.status.rate_in > 0 ? state.status.rate_in : 10;
  const started = performance.now();
  bar.hidden = false;
  bar.value = 0;
  const timer = setInterval(() => { bar.value = Math.min(0.95, (performance.now() - started) / 1000 * rate / n); },
                            100);
  state.busy = true;
  updateControls();
  try {
    const answer = await rest("POST",
      `${CONFIG.api}/camera/${encodeURIComponent(camera)}/background?n_images=${n}`);
    bar.value = 1;
    await setConfig({ image_background: answer.background_id }, `background ${answer.background_id} collected`);
  } catch (error) {
    showMessage("controls-message", `background: ${error.message}`, true);
  } finally {
    clearInterval(timer);
    state.busy = false;
    updateControls();
    setTimeout(() => { bar.hidden = true; }, 1500);
  }
};

// --- capture ---------------------------------------------------------------------------------------------------
$("snapshot").onclick = () => {
  const canvas = document.createElement("canvas");
  canvas.width = imageCanvas.width;
  canvas.height = imageCanvas.height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(imageCanvas, 0, 0);
  ctx.drawImage(overlayCanvas, 0, 0);
  const link = document.createElement("a");
  link.download = `${CONFIG.name}_${state.frame?.header.pulse_id ?? "snapshot"}.png`;
  link.href = canvas.toDataURL("image/png");
  link.click();
};

$("record").onclick = () => {
  const n = Math.round(numberOrNull("record-n") || 0);
  send({ type: "record", n });
  showMessage("record-message", `recording ${n} frames ...`);
};
$("record-cancel").onclick = () => send({ type: "record_cancel" });

function showRecording(message) {
  const bar = $("record-progress");
  const running = message.state === "running";
  bar.hidden = false;
  bar.value = message.n ? message.done / message.n : 0;
  $("record").disabled = running;
  $("record-cancel").hidden = !running;
  if (running) {
    showMessage("record-message", `recording: ${message.done} / ${message.n} frames`);
  } else if (message.state === "done") {
    const node = $("record-message");
    node.className = "message";
    node.textContent = `recorded ${message.done} frames: `;
    const link = document.createElement("a");
    link.href = message.url;
    link.download = message.file_name;
    link.id = "record-link";
    link.textContent = message.file_name;
    node.append(link);
    link.click();
  } else {
    showMessage("record-message", `recording ${message.state}${message.error ? ": " + message.error : ""} ` +
                `(${message.done} / ${message.n} frames)`, message.state === "error");
  }
}

// --- display controls ------------------------------------------------------------------------------------------
$("auto-levels").onchange = (e) => {
  $("level-min").disabled = $("level-max").disabled = e.target.checked;
  const levels = state.frame?.header.levels;
  if (!e.target.checked && levels && $("level-min").value === "") {
    $("level-min").value = levels[0];
    $("level-max").value = levels[1];
  }
  sendView();
};
$("level-min").onchange = $("level-max").onchange = $("max-rate").onchange = sendView;
$("colormap").onchange = (e) => setColormap(e.target.value);
$("units").onchange = () => state.frame && updatePanel();
$("zoom-fit").onclick = fitImage;
$("zoom-one").onclick = () => {
  const dpr = window.devicePixelRatio || 1;
  zoomAt(1 / dpr / state.scale, imageCanvas.clientWidth / 2, imageCanvas.clientHeight / 2);
};
for (const box of document.querySelectorAll("[data-overlay]")) box.onchange = drawOverlays;

async function start() {
  $("name").textContent = `${CONFIG.kind === "camera" ? "camera" : "instance"} ${CONFIG.name}`;
  state.colormaps = await (await fetch("/view/static/colormaps.json")).json();
  const select = $("colormap");
  for (const name of Object.keys(state.colormaps)) select.append(new Option(name, name, false, name === "gray"));
  setColormap("gray");
  new ResizeObserver(resizeCanvases).observe($("stage"));
  resizeCanvases();
  connect();
}

start();
