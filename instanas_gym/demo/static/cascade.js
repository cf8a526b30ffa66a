// The demo page for a cascade: per image, the path it took (each stage's architecture, its answer and
// latency), where it stopped, and where the test images stop. Uses app.js's helpers (loaded after this
// file; these functions run only once it has loaded).
"use strict";

const STAGE_LIGHT = [198, 219, 239], STAGE_DARK = [8, 48, 107];

function stageColour(s) {
  // Stage s (0-based) of S.stages: light blue for the first, dark blue for the last.
  const f = S.stages > 1 ? s / (S.stages - 1) : 0;
  const c = STAGE_LIGHT.map((v, k) => Math.round(v + f * (STAGE_DARK[k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function stageName(s) { return `after stage ${s + 1}`; }

function setupCascade() {
  document.title = "InstaNAS: a cascade per image";
  $("title").textContent = "InstaNAS: a cascade of architectures per image";
  $("single-view").hidden = true;
  $("cascade-view").hidden = false;
  $("stops-box").hidden = false;
  const head = $("arch-table").querySelector("thead tr");
  head.replaceChildren(...["architecture", "runs", "answers", "right", "ms"].map((t) => el("th", { textContent: t })));
  head.title = "runs: share of the architectures run on the test split; answers: share of the test images it " +
    "answered (it ran last); right: of those; ms: a stage of it by the table (decision and network)";
  $("embedding-note").textContent = "Each disc: one architecture of the cascade's family (area: its share of the " +
    "runs; fill: a stage of it by the table, on the scale above; outline: its colour in the lists). Grey rings: " +
    "landmarks. The red ring: the architecture that answered this image; the red rows: every one its path ran.";
}

function ruleText() {
  if (S.policy.kind !== "thresholds") {
    return `a learned policy (${ms(S.decision_ms)} per decision in ${S.table_runtime})`;
  }
  const order = S.policy.order.map((i) => archLabel(i)).join(", then ");
  const limits = S.policy.thresholds.map(pct).join(", ");
  return `a confidence threshold rule (${order}` + (limits ? `; stop once the top probability reaches ${limits})` : ")");
}

function describeCascade() {
  const images = S.test_images.toLocaleString("en");
  $("about").textContent = `${S.dataset_title}: a cascade of up to ${S.stages} stages over ${S.architectures.length} ` +
    `architectures, ${ruleText()}. On its ${images} test images it stops after the first stage for ` +
    `${pct(S.stops[0])} and runs ${S.mean_stages.toFixed(2)} stages on average (${ms(S.mean_ms)} end to end by ` +
    `the table), ${pct(S.test_accuracy)} right.`;
  $("classes").textContent = `The model knows only these ${S.classes.length} classes: ${S.classes.join(", ")}. ` +
    "Anything else still gets one of them; the page warns when an upload is unlike the test images.";
  const decision = S.policy.kind === "thresholds" ? "0 for a threshold rule, a comparison"
    : `${ms(S.decision_ms)}, the policy's median time at start`;
  $("latency-note").textContent = "By the table: per stage, the latency table's figure for its network " +
    `(${S.table_runtime}, batch 1, ${S.table_threads} thread(s), timed in isolation) plus one decision ` +
    `(${decision}); measured: each stage's wall clock in the server for this request (the decision, then the ` +
    "network), which adds Python overhead and varies with load.";
}

function drawCascadeShares() {
  $("gallery-note").textContent = `${S.gallery.length / S.classes.length} test images per class, picked so that ` +
    "every architecture that gives the answer on a class shows up (the chip: its colour; the digit: the stages " +
    "run): images that go far are over-represented here. The random images below are typical; each " +
    "architecture's share of the runs on all test images:";
  $("shares").replaceChildren(...S.architectures.map((a, i) => {
    const chip = el("span");
    chip.append(swatch(archColour(i)), `${i + 1} ${a.name}: ${pct(a.share)}`);
    return chip;
  }));
}

function stopBar(stops, title) {
  const bar = el("div", { className: "bar", title });
  stops.forEach((share, s) => {
    if (share <= 0) return;
    const part = el("span", { title: `${stageName(s)}: ${pct(share)}` });
    part.dataset.stage = s + 1;
    part.style.width = `${100 * share}%`;
    part.style.background = stageColour(s);
    bar.append(part);
  });
  return bar;
}

function drawStops() {
  const all = `all ${S.test_images.toLocaleString("en")} test images`;
  $("stops").replaceChildren(el("span", { textContent: `${all}, ${ms(S.mean_ms)}` }),
    stopBar(S.stops, `${all}: ${S.mean_stages.toFixed(2)} stages on average`));
  $("stops-legend").replaceChildren(...S.stops.map((share, s) => {
    const chip = el("span");
    chip.append(swatch(stageColour(s)), `${stageName(s)}: ${pct(share)}`);
    return chip;
  }));
  const names = ["easiest fifth", "2nd fifth", "3rd fifth", "4th fifth", "hardest fifth"];
  const box = $("difficulty");
  S.by_difficulty.forEach((row, b) => {
    const title = `losses ${row.loss_from.toPrecision(2)} to ${row.loss_to.toPrecision(2)}: ` +
      `${row.mean_stages.toFixed(2)} stages and ${ms(row.mean_e2e_ms)} by the table on average, ${pct(row.accuracy)} right`;
    box.append(el("span", { textContent: `${names[b] || "fifth " + (b + 1)}, ${ms(row.mean_e2e_ms)}` }),
      stopBar(row.stops, title));
  });
  const easy = S.by_difficulty[0], hard = S.by_difficulty[S.by_difficulty.length - 1];
  const measured = S.by_difficulty.reduce((n, row) => n + row.images, 0).toLocaleString("en");
  $("stops-note").textContent = "The share of the test images that stop after each stage; the ms: their mean " +
    "latency end to end by the table. Below, the same for each fifth of them by difficulty.";
  $("difficulty-note").textContent = `Difficulty: the loss of ${archLabel(S.reference)}, the largest, on each ` +
    `of ${measured} random test images: one yardstick for every image, wherever it stopped. Each bar shows where ` +
    `a fifth of them stop. The easiest fifth runs ${easy.mean_stages.toFixed(2)} stages on average ` +
    `(${ms(easy.mean_e2e_ms)} end to end by the table), the hardest ${hard.mean_stages.toFixed(2)} ` +
    `(${ms(hard.mean_e2e_ms)}).`;
}

function thresholdText(p) {
  if (p.threshold === null) return "";
  return p.confidence >= p.threshold ? `, reaches the threshold ${pct(p.threshold)}`
    : `, below the threshold ${pct(p.threshold)}: go on`;
}

function stageCard(p) {
  const li = el("li", { className: "stage-card" });
  li.dataset.stage = p.stage;
  li.dataset.arch = p.architecture;
  const head = el("div", { className: "stage-head" });
  head.append(swatch(archColour(p.architecture)), `Stage ${p.stage}: ${archLabel(p.architecture)}`);
  const answer = el("div", { className: "stage-answer",
    textContent: `answers ${p.prediction}, ${pct(p.confidence)}${thresholdText(p)}` });
  const latency = el("div", { className: "stage-latency",
    textContent: `${ms(p.latency_ms.table)} by the table, ${ms(p.latency_ms.measured)} measured` });
  const grid = el("div", { className: "grid" });
  drawGrid(grid, p.mask, p.mask);
  li.append(head, answer, latency, grid);
  return li;
}

function stopText(a) {
  const n = a.stop.after, last = a.path[n - 1];
  if (a.stop.by === "last stage") {
    return `Ran all ${S.stages} stages: the cascade ends after its last, and the answer is stage ${n}'s.`;
  }
  let why = "the learned policy chose STOP";
  if (S.policy.kind === "thresholds") {
    why = last.threshold === null ? "the rule has no architecture left"
      : `its confidence ${pct(last.confidence)} reached the threshold ${pct(last.threshold)}`;
  }
  const l = a.stop.latency_ms;
  return `Stopped after stage ${n} of ${S.stages}: ${why}; the answer is stage ${n}'s. The STOP decision: ` +
    `${ms(l.table)} by the table, ${ms(l.measured)} measured.`;
}

function pathText(a) {
  return a.path.map((p) => archLabel(p.architecture)).join(", then ");
}

function renderCascade(a) {
  const t = a.latency_ms.table, m = a.latency_ms.measured;
  $("latency-table").textContent = `End to end by the table (${S.table_runtime}): ${ms(t.e2e)} ` +
    `= networks ${ms(t.networks)} + ${t.decision_count} decision(s) ${ms(t.decisions)}`;
  const parts = a.path.map((p) => `stage ${p.stage} ${ms(p.latency_ms.measured)}`);
  if (a.stop.latency_ms) parts.push(`STOP ${ms(a.stop.latency_ms.measured)}`);
  $("latency-measured").textContent = `Measured for this request: ${ms(m.e2e)} = ${parts.join(" + ")}`;
  $("path-summary").textContent = `(${a.stop.after} of ${S.stages} stages)`;
  $("path").replaceChildren(...a.path.map(stageCard));
  $("stop").textContent = stopText(a);
  $("previous-path").textContent = previous && previous.kind === "cascade"
    ? `The previous image: ${previous.stop.after} stage(s), ${pathText(previous)}; answer ${previous.prediction}.` : "";
  highlight(a.architecture, a.path.map((p) => p.architecture));
}
