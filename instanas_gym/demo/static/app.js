// The demo page: asks the server for its summary once, then classifies one image per request.
// The previous architecture is kept here, in the page, so every visitor sees their own.
// A cascade (S.kind === "cascade") is drawn by cascade.js, loaded before this file.
"use strict";

const OP_COLOURS = ["#1f77b4", "#9ecae1", "#ff7f0e", "#fdbe85", "#2ca02c"];
// No red among them: red marks this image's architecture (the ring, the table's row).
const ARCH_COLOURS = ["#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#66c2a5", "#e6ab02", "#999999",
  "#1b9e77", "#7570b3"];
const RING = "#d62728";
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const SVG = "http://www.w3.org/2000/svg";

let S = null;             // the server's summary
let current = null;       // the last answer
let previous = null;      // the answer before it

const $ = (id) => document.getElementById(id);
const ms = (v) => v.toFixed(3) + " ms";
function pct(v) {
  if (v === null || v === undefined) return "-";
  return (100 * v).toFixed(v > 0 && v < 0.001 ? 2 : 1) + "%";
}
const el = (tag, props) => Object.assign(document.createElement(tag), props || {});

function archColour(i) { return i === null || i === undefined ? "#777" : ARCH_COLOURS[i % ARCH_COLOURS.length]; }

function archLabel(i) {
  const a = S.architectures[i];
  if (S.kind === "cascade") return `architecture ${i + 1} (${a.name})`;
  return `architecture ${i + 1}` + (a.name ? `, the ${a.name}` : "");
}

function swatch(colour) {
  const s = el("span", { className: "swatch" });
  s.style.background = colour;
  return s;
}

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
  const b = el("button", { className: "thumb", type: "button" });
  b.dataset.index = entry.index;
  const path = entry.stages ? `${entry.stages} stage(s), answered by ` : "";
  b.title = `${title}test image ${entry.index}: ${entry.label}, predicted ${entry.prediction} ` +
    `(${path}${archLabel(entry.architecture)}` + (entry.loss === null ? ")" : `, difficulty ${entry.loss.toFixed(3)})`);
  const img = el("img", { src: `/api/images/${entry.index}.png`, alt: entry.label });
  const chip = el("span", { className: "chip", textContent: entry.stages || "" });
  chip.style.background = archColour(entry.architecture);
  b.append(img, chip);
  b.addEventListener("click", () => classifyIndex(entry.index));
  return b;
}

function drawGrid(grid, mask, served) {
  grid.replaceChildren();
  if (!mask) { grid.textContent = "none yet"; return; }
  grid.append(el("div", { className: "rowname", textContent: "cell" }));
  for (let c = 0; c < 17; c++) grid.append(el("div", { className: "colname", textContent: c + 1 }));
  for (let j = 0; j < S.ops.length; j++) {
    grid.append(el("div", { className: "rowname", textContent: S.ops[j], title: S.op_descriptions[j] }));
    for (let c = 0; c < 17; c++) {
      const d = el("div", { className: "cell" + (S.opens_stage[c] && c > 0 ? " stage" : "") });
      const empty = !served[c].some((v) => v);
      const fallback = empty && S.opens_stage[c] && j === S.ops.length - 1;
      d.dataset.cell = c;
      d.dataset.op = j;
      if (served[c][j] === 1) { d.classList.add("on"); d.style.background = OP_COLOURS[j]; d.title = `cell ${c + 1}: ${S.op_descriptions[j]}`; }
      else if (fallback) {
        d.classList.add("fallback"); d.style.backgroundColor = OP_COLOURS[j];
        d.title = `cell ${c + 1} is empty and opens a stage: the basic block runs`;
      } else if (empty) { d.classList.add("identity"); d.title = `cell ${c + 1} is empty: the identity`; }
      grid.append(d);
    }
  }
}

function drawLegend() {
  const legend = $("legend");
  S.op_descriptions.forEach((text, j) => {
    const row = el("span", { className: "op" });
    row.append(swatch(OP_COLOURS[j]), text);
    legend.append(row);
  });
  legend.insertAdjacentHTML("beforeend",
    '<span><span class="swatch" style="background:#2ca02c;border:1px solid #000;background-image:' +
    'repeating-linear-gradient(45deg,#fff8 0 3px,transparent 3px 6px)"></span>fallback: an empty cell that opens ' +
    'a stage runs the basic block</span>' +
    '<span><span class="swatch" style="background:#f4f4f4;border:1px dashed #bbb"></span>empty cell: the identity</span>');
}

function circle(attrs) {
  const c = document.createElementNS(SVG, "circle");
  Object.entries(attrs).forEach(([k, v]) => c.setAttribute(k, v));
  return c;
}

function drawEmbedding() {
  const svg = $("embedding");
  svg.replaceChildren();
  for (const l of S.landmarks) {
    const t = document.createElementNS(SVG, "text");
    Object.entries({ x: l.x, y: -l.y + 0.16, "font-size": 0.08, fill: "#666", "text-anchor": "middle" })
      .forEach(([k, v]) => t.setAttribute(k, v));
    t.textContent = `${l.name}, ${ms(l.table_ms + S.controller_ms)}`;
    svg.append(circle({ cx: l.x, cy: -l.y, r: 0.05, fill: "none", stroke: "#999", "stroke-width": 0.015 }), t);
  }
  S.architectures.forEach((a, i) => {
    const c = circle({ cx: a.x, cy: -a.y, r: 0.04 + 0.22 * Math.sqrt(a.share), fill: latencyColour(a.e2e_ms),
      "fill-opacity": 0.85, stroke: archColour(i), "stroke-width": 0.02, "data-arch": i });
    const title = document.createElementNS(SVG, "title");
    title.textContent = S.kind === "cascade"
      ? `${archLabel(i)}: ${pct(a.share)} of the runs, the answer for ${pct(a.answers)} of the test images ` +
        `(${pct(a.accuracy)} of those right), ${ms(a.e2e_ms)} a stage by the table`
      : `${archLabel(i)}: ${pct(a.share)} of the test images, ${pct(a.accuracy)} right, ` +
        `${ms(a.e2e_ms)} end to end by the table`;
    c.append(title);
    svg.append(c);
  });
  svg.append(circle({ id: "current-ring", r: 0.0, fill: "none", stroke: RING, "stroke-width": 0.035 }));
  const [lo, hi] = latencyRange();
  $("colorbar").style.background = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map(viridis).join(",")})`;
  $("colorbar-ticks").replaceChildren(...[lo, Math.sqrt(lo * hi), hi].map((v) => el("span", { textContent: ms(v) })));
  $("colorbar-ticks").title = "end-to-end latency by the table, log scale";
  const body = $("arch-table").querySelector("tbody");
  S.architectures.forEach((a, i) => {
    const tr = el("tr");
    tr.dataset.arch = i;
    const name = el("td");
    name.append(swatch(archColour(i)), `${i + 1}` + (a.name ? ` ${a.name}` : ""));
    const cells = S.kind === "cascade" ? [pct(a.share), pct(a.answers), pct(a.accuracy), a.e2e_ms.toFixed(3)]
      : [pct(a.share), pct(a.accuracy), a.e2e_ms.toFixed(3)];
    tr.append(name, ...cells.map((t) => el("td", { textContent: t })));
    body.append(tr);
  });
}

function drawShares() {
  $("gallery-note").textContent = `${S.gallery.length / S.classes.length} test images per class, picked so that ` +
    "every architecture the controller uses on a class shows up: rare architectures are over-represented here. " +
    "The random images below are typical; each architecture's share of all test images:";
  $("shares").replaceChildren(...S.architectures.map((a, i) => {
    const chip = el("span");
    chip.append(swatch(archColour(i)), `${i + 1}${a.name ? " " + a.name : ""}: ${pct(a.share)}`);
    return chip;
  }));
}

function drawDifficulty() {
  const box = $("difficulty");
  const names = ["easiest fifth", "2nd fifth", "3rd fifth", "4th fifth", "hardest fifth"];
  S.by_difficulty.forEach((row, b) => {
    const bar = el("div", { className: "bar", title: `losses ${row.loss_from.toPrecision(2)} to ` +
      `${row.loss_to.toPrecision(2)}: mean ${ms(row.mean_e2e_ms)} by the table, ${pct(row.accuracy)} right` });
    row.shares.forEach((share, i) => {
      if (share <= 0) return;
      const part = el("span", { title: `${archLabel(i)}: ${pct(share)}` });
      part.style.width = `${100 * share}%`;
      part.style.background = archColour(i);
      bar.append(part);
    });
    box.append(el("span", { textContent: `${names[b] || "fifth " + (b + 1)}, ${ms(row.mean_e2e_ms)}` }), bar);
  });
  const easy = S.by_difficulty[0].mean_e2e_ms, hard = S.by_difficulty[S.by_difficulty.length - 1].mean_e2e_ms;
  const verdict = easy < hard ? "cheaper" : "no cheaper";
  const measured = S.by_difficulty.reduce((n, row) => n + row.images, 0).toLocaleString("en");
  $("difficulty-note").textContent = `Difficulty: the loss of ${archLabel(S.reference)}, the largest, on each ` +
    `of ${measured} random test images: one yardstick for every image, whichever architecture the controller ` +
    "picked. Each bar shows the architectures picked for a fifth of them. The easiest fifth gets " +
    `${verdict} architectures than ` +
    `the hardest (${ms(easy)} against ${ms(hard)} end to end by the table, on average).`;
}

function highlight(archIndex, ran) {
  // The ring: the architecture that answered; the table's red rows: every one that ran (default: that one).
  const ring = $("current-ring");
  const rows = ran || [archIndex];
  document.querySelectorAll("#arch-table tr").forEach((tr) =>
    tr.classList.toggle("current", tr.dataset.arch !== undefined && rows.includes(Number(tr.dataset.arch))));
  if (archIndex === null || archIndex === undefined) { ring.setAttribute("r", 0); return; }
  const a = S.architectures[archIndex];
  ring.setAttribute("cx", a.x);
  ring.setAttribute("cy", -a.y);
  ring.setAttribute("r", 0.08 + 0.22 * Math.sqrt(a.share));
}

function archName(answer) {
  if (!answer) return "";
  const name = answer.architecture === null ? "one not seen on the test split" : archLabel(answer.architecture);
  return `(${name}${answer.nearest ? ", served by the nearest exported one" : ""})`;
}

function renderOod(t) {
  const box = $("ood");
  box.hidden = !(t && t.far);
  if (box.hidden) return;
  box.textContent = `This image is unlike ${S.dataset_title}'s test images (score ${t.score.toFixed(1)}; ` +
    `above 1 happens to 2% of them): the model still answers with one of its ${S.classes.length} classes, ` +
    "so do not trust the answer.";
}

function render() {
  const a = current;
  $("result").classList.remove("stale");
  $("message").textContent = "";
  $("current-image").src = "data:image/png;base64," + a.image_png;
  $("current-image").hidden = false;
  $("no-image").hidden = true;
  const truth = a.label ? ` (true: ${a.label})` : (a.inverted ? " (image inverted)" : "");
  $("prediction").textContent = `${a.prediction}, ${pct(a.confidence)}${truth}`;
  renderOod(a.typicality);
  $("top").replaceChildren(...a.top.map((t) => el("li", { textContent: `${t.class}: ${pct(t.probability)}` })));
  if (a.kind === "cascade") { renderCascade(a); return; }
  const t = a.latency_ms.table, m = a.latency_ms.measured;
  $("latency-table").textContent = `End to end by the table (${S.table_runtime}): ${ms(t.e2e)} ` +
    `= controller ${ms(t.controller)} + network ${ms(t.network)}`;
  $("latency-measured").textContent = `Measured for this request: ${ms(m.e2e)} ` +
    `= controller ${ms(m.controller)} + network ${ms(m.network)}`;
  $("current-arch").textContent = archName(a);
  drawGrid($("grid-current"), a.mask, a.served_mask);
  $("previous-arch").textContent = archName(previous);
  drawGrid($("grid-previous"), previous && previous.mask, previous && previous.served_mask);
  highlight(a.architecture);
}

function showError(text) {
  // The result on screen belongs to an earlier request: grey it out and say so.
  $("message").textContent = text;
  $("result").classList.add("stale");
  $("prediction").textContent = "No answer: the last request failed (see the message).";
  $("ood").hidden = true;
  highlight(null);
}

async function send(form) {
  $("message").textContent = "";
  let answer;
  try {
    const r = await fetch("/api/predict", { method: "POST", body: form });
    answer = await r.json();
    if (!r.ok) { showError(answer.error || `error ${r.status}`); return; }
  } catch (err) {
    showError(`the server did not answer (${err})`);
    return;
  }
  previous = current;
  current = answer;
  render();
  document.body.dataset.answers = Number(document.body.dataset.answers || 0) + 1;
}

function classifyIndex(index) {
  const form = new FormData();
  form.append("index", index);
  return send(form);
}

function describe() {
  const used = S.architectures.filter((a) => a.share > 0).length;
  const images = S.test_images.toLocaleString("en");
  const choice = S.family_size
    ? `chooses one of ${S.family_size} architectures for each image; ${used} of them serve its ${images} test images`
    : `picks a mask (one architecture) for each image; ${used} distinct ones serve its ${images} test images`;
  const nearest = S.family_size && S.family_size > S.architectures.length
    ? " (only those are exported: an image that asks for another is served by the nearest)" : "";
  $("about").textContent = `${S.dataset_title}: a controller ${choice}${nearest}, ${pct(S.test_accuracy)} right; ` +
    `the controller takes ${ms(S.controller_ms)} in ${S.table_runtime}.`;
  $("classes").textContent = `The model knows only these ${S.classes.length} classes: ${S.classes.join(", ")}. ` +
    "Anything else still gets one of them; the page warns when an upload is unlike the test images.";
  $("latency-note").textContent = `By the table: the controller's median time at start plus the latency table's ` +
    `figure for the network (${S.table_runtime}, batch 1, ${S.table_threads} thread(s), timed in isolation); ` +
    "measured: this request's wall clock in the server, which adds Python overhead and varies with load.";
}

async function init() {
  const r = await fetch("/api/summary");
  S = await r.json();
  const cascade = S.kind === "cascade";
  if (cascade) setupCascade();
  (cascade ? describeCascade : describe)();
  $("gallery").replaceChildren(...S.gallery.map((e) => thumb(e, "")));
  $("sample").replaceChildren(...S.sample.map((e) => thumb(e, "random: ")));
  $("easiest").replaceChildren(...S.easiest.map((e) => thumb(e, "easy: ")));
  $("hardest").replaceChildren(...S.hardest.map((e) => thumb(e, "hard: ")));
  (cascade ? drawCascadeShares : drawShares)();
  drawLegend();
  drawEmbedding();
  (cascade ? drawStops : drawDifficulty)();
  drawGrid($("grid-current"), null);
  drawGrid($("grid-previous"), null);
  $("upload-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("upload-input").files[0];
    if (!file) { showError("choose a file first"); return; }
    const form = new FormData();
    form.append("image", file);
    form.append("invert", $("invert").value);
    send(form);
  });
  document.body.dataset.ready = "1";
}

init();
