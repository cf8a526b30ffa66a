// The demo page: asks the server for its summary once, then classifies one image per request.
// The previous architecture is kept here, in the page, so every visitor sees their own.
"use strict";

const OP_COLOURS = ["#1f77b4", "#9ecae1", "#ff7f0e", "#fdbe85", "#2ca02c"];
const ARCH_COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999",
  "#66c2a5", "#fc8d62"];
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const SVG = "http://www.w3.org/2000/svg";

let S = null;             // the server's summary
let current = null;       // the last answer
let previous = null;      // the answer before it

const $ = (id) => document.getElementById(id);
const ms = (v) => v.toFixed(3) + " ms";
const pct = (v) => (100 * v).toFixed(1) + "%";

function archColour(i) { return i === null || i === undefined ? "#777" : ARCH_COLOURS[i % ARCH_COLOURS.length]; }

function viridis(t) {
  t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function latencyRange() {
  const all = S.architectures.map((a) => a.e2e_ms).concat(S.landmarks.map((l) => l.table_ms + S.controller_ms));
  return [Math.min(...all), Math.max(...all)];
}

function latencyColour(v) {
  const [lo, hi] = latencyRange();
  return viridis(hi > lo ? (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) : 0.5);
}

function thumb(entry, title) {
  const b = document.createElement("button");
  b.className = "thumb";
  b.type = "button";
  b.dataset.index = entry.index;
  b.title = `${title}test image ${entry.index}: ${entry.label}, predicted ${entry.prediction} ` +
    `(architecture ${entry.architecture + 1}, loss ${entry.loss.toFixed(3)})`;
  const img = document.createElement("img");
  img.src = `/api/images/${entry.index}.png`;
  img.alt = entry.label;
  const chip = document.createElement("span");
  chip.className = "chip";
  chip.style.background = archColour(entry.architecture);
  b.append(img, chip);
  b.addEventListener("click", () => classifyIndex(entry.index));
  return b;
}

function drawGrid(el, mask, served, archIndex) {
  el.replaceChildren();
  if (!mask) { el.textContent = "none yet"; return; }
  el.append(Object.assign(document.createElement("div"), { className: "rowname", textContent: "cell" }));
  for (let c = 0; c < 17; c++) {
    el.append(Object.assign(document.createElement("div"), { className: "colname", textContent: c + 1 }));
  }
  for (let j = 0; j < S.ops.length; j++) {
    el.append(Object.assign(document.createElement("div"), { className: "rowname", textContent: S.ops[j] }));
    for (let c = 0; c < 17; c++) {
      const d = document.createElement("div");
      d.className = "cell" + (S.opens_stage[c] && c > 0 ? " stage" : "");
      const empty = !served[c].some((v) => v);
      const on = served[c][j] === 1;
      const fallback = empty && S.opens_stage[c] && j === S.ops.length - 1;
      d.dataset.cell = c;
      d.dataset.op = j;
      if (on) { d.classList.add("on"); d.style.background = OP_COLOURS[j]; d.title = `cell ${c + 1}: ${S.ops[j]}`; }
      else if (fallback) {
        d.classList.add("fallback"); d.style.backgroundColor = OP_COLOURS[j];
        d.title = `cell ${c + 1} is empty and opens a stage: the basic block runs`;
      } else if (empty) { d.classList.add("identity"); d.title = `cell ${c + 1} is empty: the identity`; }
      el.append(d);
    }
  }
}

function drawLegend() {
  const el = $("legend");
  S.ops.forEach((name, j) => {
    const s = document.createElement("span");
    s.innerHTML = `<span class="swatch" style="background:${OP_COLOURS[j]}"></span>${name}`;
    el.append(s);
  });
  el.insertAdjacentHTML("beforeend",
    '<span><span class="swatch" style="background:#2ca02c;border:1px solid #000;background-image:' +
    'repeating-linear-gradient(45deg,#fff8 0 3px,transparent 3px 6px)"></span>fallback (empty stage opener)</span>' +
    '<span><span class="swatch" style="background:#f4f4f4;border:1px dashed #bbb"></span>empty cell: identity</span>');
}

function drawEmbedding() {
  const svg = $("embedding");
  svg.replaceChildren();
  for (const l of S.landmarks) {
    const c = document.createElementNS(SVG, "circle");
    Object.entries({ cx: l.x, cy: -l.y, r: 0.05, fill: "none", stroke: "#999", "stroke-width": 0.015 })
      .forEach(([k, v]) => c.setAttribute(k, v));
    const t = document.createElementNS(SVG, "text");
    Object.entries({ x: l.x, y: -l.y + 0.16, "font-size": 0.08, fill: "#666", "text-anchor": "middle" })
      .forEach(([k, v]) => t.setAttribute(k, v));
    t.textContent = `${l.name}, ${ms(l.table_ms + S.controller_ms)}`;
    svg.append(c, t);
  }
  S.architectures.forEach((a, i) => {
    const c = document.createElementNS(SVG, "circle");
    const r = 0.04 + 0.22 * Math.sqrt(a.share);
    Object.entries({ cx: a.x, cy: -a.y, r, fill: latencyColour(a.e2e_ms), "fill-opacity": 0.85, stroke: archColour(i),
      "stroke-width": 0.02, "data-arch": i }).forEach(([k, v]) => c.setAttribute(k, v));
    const title = document.createElementNS(SVG, "title");
    title.textContent = `architecture ${i + 1}: ${pct(a.share)} of the test images, ${pct(a.accuracy)} right, ` +
      `${ms(a.e2e_ms)} end to end by the table`;
    c.append(title);
    svg.append(c);
  });
  const ring = document.createElementNS(SVG, "circle");
  Object.entries({ id: "current-ring", r: 0.0, fill: "none", stroke: "#d62728", "stroke-width": 0.035 })
    .forEach(([k, v]) => ring.setAttribute(k, v));
  svg.append(ring);
  const [lo, hi] = latencyRange();
  const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => viridis(t)).join(",");
  $("colorbar").style.background = `linear-gradient(to right, ${stops})`;
  $("colorbar").title = `${ms(lo)} (left) to ${ms(hi)} (right), log scale`;
  const body = $("arch-table").querySelector("tbody");
  S.architectures.forEach((a, i) => {
    const tr = document.createElement("tr");
    tr.dataset.arch = i;
    tr.innerHTML = `<td><span class="swatch" style="display:inline-block;width:10px;height:10px;background:` +
      `${archColour(i)}"></span> ${i + 1}</td><td>${pct(a.share)}</td><td>${pct(a.accuracy)}</td><td>${a.e2e_ms.toFixed(3)}</td>`;
    body.append(tr);
  });
}

function highlight(archIndex) {
  const ring = $("current-ring");
  document.querySelectorAll("#arch-table tr").forEach((tr) => tr.classList.toggle("current", tr.dataset.arch == archIndex));
  if (archIndex === null || archIndex === undefined) { ring.setAttribute("r", 0); return; }
  const a = S.architectures[archIndex];
  ring.setAttribute("cx", a.x);
  ring.setAttribute("cy", -a.y);
  ring.setAttribute("r", 0.08 + 0.22 * Math.sqrt(a.share));
}

function archName(answer) {
  if (!answer) return "";
  const name = answer.architecture === null ? "one not seen on the test split" : `architecture ${answer.architecture + 1}`;
  return `(${name}${answer.nearest ? ", served by the nearest exported one" : ""})`;
}

function render() {
  const a = current;
  $("message").textContent = "";
  $("current-image").src = "data:image/png;base64," + a.image_png;
  const truth = a.label ? ` (true: ${a.label})` : (a.inverted ? " (image inverted)" : "");
  $("prediction").textContent = `${a.prediction}, ${pct(a.confidence)}${truth}`;
  $("top").replaceChildren(...a.top.map((t) => Object.assign(document.createElement("li"),
    { textContent: `${t.class}: ${pct(t.probability)}` })));
  const t = a.latency_ms.table, m = a.latency_ms.measured;
  $("latency-table").textContent = `End to end by the table (${S.table_runtime}): ${ms(t.e2e)} ` +
    `= controller ${ms(t.controller)} + network ${ms(t.network)}`;
  $("latency-measured").textContent = `Measured for this request: ${ms(m.e2e)} ` +
    `= controller ${ms(m.controller)} + network ${ms(m.network)}`;
  $("current-arch").textContent = archName(a);
  drawGrid($("grid-current"), a.mask, a.served_mask, a.architecture);
  $("previous-arch").textContent = archName(previous);
  drawGrid($("grid-previous"), previous && previous.mask, previous && previous.served_mask, previous && previous.architecture);
  highlight(a.architecture);
}

async function send(form) {
  $("message").textContent = "";
  let answer;
  try {
    const r = await fetch("/api/predict", { method: "POST", body: form });
    answer = await r.json();
    if (!r.ok) { $("message").textContent = answer.error || `error ${r.status}`; return; }
  } catch (err) {
    $("message").textContent = `the server did not answer (${err})`;
    return;
  }
  previous = current;
  current = answer;
  render();
}

function classifyIndex(index) {
  const form = new FormData();
  form.append("index", index);
  return send(form);
}

async function init() {
  const r = await fetch("/api/summary");
  S = await r.json();
  const used = S.architectures.length;
  $("about").textContent = `${S.dataset}: a controller picks one of ${used} architecture${used === 1 ? "" : "s"} ` +
    `for each image (${pct(S.test_accuracy)} right on ${S.test_images.toLocaleString()} test images; ` +
    `controller ${ms(S.controller_ms)} in ${S.table_runtime}).`;
  $("gallery").replaceChildren(...S.gallery.map((e) => thumb(e, "")));
  $("easiest").replaceChildren(...S.easiest.map((e) => thumb(e, "easy: ")));
  $("hardest").replaceChildren(...S.hardest.map((e) => thumb(e, "hard: ")));
  drawLegend();
  drawEmbedding();
  drawGrid($("grid-current"), null);
  drawGrid($("grid-previous"), null);
  $("upload-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("upload-input").files[0];
    if (!file) { $("message").textContent = "choose a file first"; return; }
    const form = new FormData();
    form.append("image", file);
    form.append("invert", $("invert").value);
    send(form);
  });
  document.body.dataset.ready = "1";
}

init();
