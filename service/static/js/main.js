// The explorer page: wires the API (api.js), the map (map.js), its maths (geometry.js) and pixels (images.js).
import { ApiError, LatestDecoder, getJson, getKey, postJson, postPng, query, setKey } from "./api.js";
import { ellipse, makeProjection, project, projectedCovariance, projectedFullCovariance, unproject } from "./geometry.js";
import { drawGrey, drawSigned, drawingPad, loadPng, newCanvas, toMnist } from "./images.js";
import { LatentMap, PALETTE } from "./map.js";
import { components, loadReport } from "./panels.js";
import { showScore } from "./score.js";

const $ = (id) => document.getElementById(id);
const GRID = 12;  // manifold cells per side
const STEPS = 10;  // images in the interpolation strip
const SAMPLES = 36;
const POLL_MS = 5000;  // how often the page asks /models whether a reload brought new versions (one small JSON)
const state = { target: null, models: [], projection: null, picks: [], manifoldSeq: 0, drawn: null, classes: null };

function showError(context, err) {
  const p = document.createElement("p");
  if (err instanceof ApiError && err.status === 401) {
    p.textContent = "This service needs an API key: type it in the API key field above and press “Use key”.";
    $("key").focus();
  } else {
    p.textContent = `${context}: ${err instanceof ApiError ? `${err.detail} (${err.status} ${err.type})` : err.message}`;
  }
  $("messages").append(p);
}

function clearErrors() { $("messages").replaceChildren(); }

async function busy(section, work) {
  $(section).classList.add("loading");
  $(section).setAttribute("aria-busy", "true");
  try { return await work(); } finally {
    $(section).classList.remove("loading");
    $(section).removeAttribute("aria-busy");
  }
}

const map = new LatentMap($("map"), {
  onPoint: (u, v) => state.target && decoder.request(state.target, unproject(state.projection, [u, v])),
  onClick: (u, v) => pick([u, v]),
  onView: (view) => scheduleManifold(view),
});

const stats = { completions: [], drags: [] };
const previewTile = newCanvas("");
const decoder = new LatestDecoder((pixels, z) => {
  drawGrey(previewTile, pixels);
  const ctx = $("preview").getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(previewTile, 0, 0, 280, 280);
  $("preview").setAttribute("aria-label", `The image decoded at z = [${z.map((x) => x.toFixed(2)).join(", ")}]`);
  $("preview-z").textContent = `z = [${z.map((x) => x.toFixed(3)).join(", ")}]`;
  const now = performance.now();
  stats.completions.push(now);
  if (stats.completions.length > 2000) stats.completions.shift();
  const lastSecond = stats.completions.filter((t) => t > now - 1000).length;
  $("preview-rate").textContent = `${lastSecond} decodes in the last second`;
}, (err) => showError("Decoding", err));
$("map").addEventListener("pointerdown", () => stats.drags.push({ start: performance.now(), end: null }));
$("map").addEventListener("pointerup", () => { const d = stats.drags.at(-1); if (d) d.end = performance.now(); });
window.explorer = { state, stats, decoder, map };

async function loadModels() {
  clearErrors();
  try {
    const overview = await busy("model-form", () => getJson("/models"));
    state.models = overview.models;
    $("model").replaceChildren(...overview.models.map((m) => new Option(`${m.name} (${m.kind}, K=${m.latent_dim})`, m.name,
      m.default, m.default)));
    if (!overview.models.length) throw new Error("no model is loaded");
    fillVersions();
  } catch (err) {
    showError("Loading the models", err);
    setMapMessage("The map appears once the models can be listed.");
  }
}

// What the key may do (GET /auth/whoami): its id and scopes beside the key field; the admin action only with `admin`.
async function showAccess() {
  $("admin-reload").hidden = true;
  try {
    const { key, scopes } = await getJson("/auth/whoami");
    $("key-scopes").textContent = `${key === null ? "no key needed" : `key ${key}`}: ${scopes.join(", ") || "no scopes"}`;
    $("admin-reload").hidden = !scopes.includes("admin");
  } catch (err) {
    $("key-scopes").textContent = err instanceof ApiError && err.status === 401 ? "no valid key" : "";
  }
}

async function reloadModels() {
  clearErrors();
  try {
    await busy("key-form", () => postJson("/admin/reload", {}));
    await loadModels();
  } catch (err) {
    showError("Reloading the models", err);
  }
}

function fillVersions() {
  const model = state.models.find((m) => m.name === $("model").value);
  $("version").replaceChildren(...model.versions.map((v) => new Option(`${v}`, v, v === model.default_version,
    v === model.default_version)));
  selectVersion();
}

function setMapMessage(text) {
  $("map-empty").hidden = !text;
  $("map-empty").textContent = text || "";
}

async function selectVersion() {
  clearErrors();
  const model = state.models.find((m) => m.name === $("model").value);
  state.target = { model: model.name, version: Number($("version").value), kind: model.kind, k: model.latent_dim };
  state.picks = [];
  state.drawn = null;
  Object.assign(map.marks, { a: null, b: null, drawn: null });
  $("model-info").textContent = `${model.kind}, latent dimension ${model.latent_dim}`;
  $("pca-section").hidden = model.kind !== "ppca";
  // One GET /models/{name} for the version's manifest, which both the digits' distributions and the report read.
  const detail = getJson(`/models/${encodeURIComponent(model.name)}`);
  await Promise.all([loadEmbedding(), loadClasses(detail), loadReport(state.target, detail, busy, showError), sample(),
    model.kind === "ppca" ? components(state.target, busy, showError) : null]);
  showDigit();
  decoder.request(state.target, unproject(state.projection, [map.view.cx, map.view.cy]));
  interpHint("Click two points on the map: A, then B.");
  encodeDrawing();  // the pad's digit through the newly chosen model (nothing when the pad is empty)
}

async function loadEmbedding() {
  const { model, version, k } = state.target;
  setMapMessage("Loading the test set's codes…");
  let data = null;
  try {
    data = await busy("map-section", () => getJson(`/models/${model}/versions/${version}/embedding`));
    setMapMessage(null);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      setMapMessage(`No map for ${model}/${version}: ${err.detail}. Hovering still decodes; everything else works.`);
    } else {
      setMapMessage("The map could not be loaded (see the message above).");
      showError("Loading the embedding", err);
    }
  }
  const means = data ? Float64Array.from(data.mean.flat()) : new Float64Array(0);
  state.projection = makeProjection(means, k);
  $("map-note").textContent = data ? `${data.count} test images; axes: ${state.projection.name}` : "";
  const n = means.length / k, points = new Float32Array(2 * n), sd = [];
  for (let i = 0; i < n; i++) {
    const [u, v] = project(state.projection, means.subarray(i * k, (i + 1) * k));
    points[2 * i] = u;
    points[2 * i + 1] = v;
    if (data.scale && sd.length < 300) {
      sd.push({ u, v, label: data.label[i], e: ellipse(projectedCovariance(state.projection, data.scale[i])) });
    }
  }
  $("show-sd").disabled = !data?.scale;
  map.setData(points, Uint8Array.from(data ? data.label : []), sd);
}

// Each digit's latent distribution (GET .../classes; `detail`: the promise of GET /models/{name}): fitted after
// training (the cvae's given the digit), or N(0, I) for a cvae without one. The selected digit's is drawn on the
// map; a version without one says so under the map.
async function loadClasses(detail) {
  const { model, version } = state.target;
  state.classes = null;
  try {
    // Only versions that have one are asked (a conditional model's labels, or a fitted classes file): a 404 would
    // still be handled, but the browser logs every failed request.
    const manifest = (await detail).versions.find((m) => m.version === version);
    if (!manifest || !(manifest.architecture?.labels || manifest.files?.["classes.safetensors"])) return;
    state.classes = await getJson(`/models/${model}/versions/${version}/classes`);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) showError("Loading the digits' distributions", err);
  }
}

function showDigit() {
  const text = $("digit").value, classes = state.classes;
  map.marks.digit = null;
  if (text === "") {
    $("digit-note").textContent = "";
  } else if (!classes) {
    $("digit-note").textContent = `${state.target.model}/${state.target.version} has no distribution per digit.`;
  } else {
    const d = Number(text);
    map.marks.digit = $("show-digit").checked && state.projection ? { label: d, components: classes.loc[d].map((loc, m) => {
      const [u, v] = project(state.projection, loc);
      return { u, v, e: ellipse(projectedFullCovariance(state.projection, classes.covariance[d][m])) };
    }) } : null;
    $("digit-note").textContent = `Digit ${d}: ${classes.native ? "the cvae's prior N(0, I), the same for every digit"
      : `${classes.components === 1 ? "a Gaussian" : `a mixture of ${classes.components} Gaussians`} fitted to the training set's codes`}; 1 and 2 sd ellipses.`;
  }
  map.draw();
}

let manifoldTimer = null;
function scheduleManifold(view) {
  clearTimeout(manifoldTimer);
  manifoldTimer = setTimeout(() => manifold(view), 200);
}

async function manifold(view) {
  if (!state.target) return;
  const seq = ++state.manifoldSeq, target = state.target;
  const latents = [];
  for (let r = 0; r < GRID; r++) {
    for (let c = 0; c < GRID; c++) {  // cell centres, the top row at the view's highest v
      const u = view.x0 + ((c + 0.5) / GRID) * (view.x1 - view.x0);
      const v = view.y1 - ((r + 0.5) / GRID) * (view.y1 - view.y0);
      latents.push(unproject(state.projection, [u, v]));
    }
  }
  try {
    const bitmap = await busy("manifold-section", () => postPng(`/decode${query(target.model, target.version)}`, { latents }));
    if (seq !== state.manifoldSeq) return;  // the view moved on while this one was decoding
    const canvas = $("manifold"), ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    map.drawContours(ctx, view, canvas.width, canvas.height, "230, 159, 0");
  } catch (err) {
    showError("Decoding the manifold", err);
  }
}

function pick(point) {
  state.picks = state.picks.length === 1 ? [state.picks[0], point] : [point];
  [map.marks.a, map.marks.b] = [state.picks[0], state.picks[1] ?? null];
  map.draw();
  if (state.picks.length === 2) interpolate(...state.picks);
  else interpHint("A is set: now click B on the map.");
}

// Says on the empty strip what to do, instead of a black bar.
function interpHint(text) {
  const strip = $("interp"), ctx = strip.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, strip.width, strip.height);
  ctx.fillStyle = "#ddd";
  ctx.font = "16px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(text, strip.width / 2, strip.height / 2);
  strip.dataset.hint = text;
}

async function interpolate(a, b) {
  const { model, version } = state.target;
  const latents = Array.from({ length: STEPS }, (_, i) => {
    const t = i / (STEPS - 1);
    return unproject(state.projection, [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]);
  });
  try {
    const reply = await busy("interp-section", () => postJson(`/decode${query(model, version)}`, { latents }));
    const strip = $("interp"), ctx = strip.getContext("2d"), tile = newCanvas("");
    ctx.imageSmoothingEnabled = false;
    delete strip.dataset.hint;
    reply.images.forEach((pixels, i) => {
      drawGrey(tile, pixels);
      ctx.drawImage(tile, i * 70, 0, 70, 70);
    });
  } catch (err) {
    showError("Interpolating", err);
  }
}

async function sample(event) {
  event?.preventDefault();
  const { model, version } = state.target;
  const text = $("seed").value.trim(), digit = $("digit").value;
  try {
    const bitmap = await busy("samples-section", () => postPng(`/sample${query(model, version)}`,
      { n: SAMPLES, seed: text === "" ? null : Number(text), ...(digit === "" ? {} : { digit: Number(digit) }) }));
    const ctx = $("samples").getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bitmap, 0, 0, 252, 252);
    const what = digit === "" ? "draws of the prior" : `draws of the digit ${digit}`;
    $("samples").setAttribute("aria-label", `${SAMPLES} images decoded from ${what}, seed ${text || "random"}`);
  } catch (err) {
    showError("Sampling", err);
  }
}

async function encodeDrawing() {
  const pixels = toMnist($("pad"));
  if (!state.target) return;
  showScore(state.target, pixels).catch((err) => showError("Scoring the drawing", err));
  if (!pixels) return;
  const { model, version } = state.target;
  const path = `/reconstruct${query(model, version)}`;
  try {
    const [fromMean, fromSample] = await busy("draw-section", () => Promise.all([
      postJson(path, { images: [pixels], sample: false }), postJson(path, { images: [pixels], sample: true, seed: 0 })]));
    const mean = fromMean.mean[0], scale = fromMean.scale?.[0] ?? null;
    state.drawn = { mean, scale };
    const [u, v] = project(state.projection, mean);
    map.marks.drawn = { u, v, e: scale ? ellipse(projectedCovariance(state.projection, scale)) : null };
    map.draw();
    const a = fromMean.images[0], b = fromSample.images[0];
    const rows = [["input", pixels], ["from the mean", a], ["from a sampled z", b]].map(([label, image]) => {
      const c = newCanvas(`${label} of the drawn digit`);
      drawGrey(c, image);
      return c;
    });
    const diff = newCanvas("difference: reconstruction from the mean minus the one from the sampled z");
    drawSigned(diff, a.map((x, i) => x - b[i]), 1);
    const labels = ["input", "mean", "sampled", "mean − sampled"].map((t) => Object.assign(document.createElement("span"), { textContent: t }));
    const z = Object.assign(document.createElement("span"), { className: "mono", textContent: `z = [${mean.map((x) => x.toFixed(2)).join(", ")}]` });
    $("rows").replaceChildren(z, ...rows, diff, document.createElement("span"), ...labels);
  } catch (err) {
    showError("Encoding the drawing", err);
  }
}

const pad = drawingPad($("pad"), encodeDrawing);
$("pad-clear").addEventListener("click", () => pad.clear());
$("pad").addEventListener("dragover", (e) => e.preventDefault());
$("pad").addEventListener("drop", async (e) => {
  e.preventDefault();
  const file = e.dataTransfer.files[0];
  if (file) { await loadPng(file, $("pad")); encodeDrawing(); }
});
$("pad-file").addEventListener("change", async (e) => {
  if (e.target.files[0]) { await loadPng(e.target.files[0], $("pad")); encodeDrawing(); }
});
$("sample-form").addEventListener("submit", sample);
$("digit").addEventListener("change", () => { showDigit(); sample(); });
$("show-digit").addEventListener("change", showDigit);
$("model").addEventListener("change", fillVersions);
$("version").addEventListener("change", selectVersion);
$("model-form").addEventListener("submit", (e) => e.preventDefault());
$("zoom-in").addEventListener("click", () => map.zoom(1.25));
$("zoom-out").addEventListener("click", () => map.zoom(0.8));
$("reset-view").addEventListener("click", () => map.resetView());
$("show-sd").addEventListener("change", (e) => { map.options.sd = e.target.checked; map.draw(); });
$("show-density").addEventListener("change", (e) => { map.options.density = e.target.checked; map.draw(); });
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setKey($("key").value.trim());
  showAccess();
  loadModels();
});
$("admin-reload").addEventListener("click", reloadModels);
$("legend").replaceChildren(...PALETTE.map((color, digit) => {
  const li = document.createElement("li"), swatch = document.createElement("i");
  swatch.style.background = color;
  li.append(swatch, `${digit}`);
  return li;
}));
$("key").value = getKey();
showAccess();
loadModels();
setInterval(pollModels, POLL_MS);

// A reload (POST /admin/reload) adds or drops versions: the selects follow without a page refresh. Only while the
// page is visible, and the current choice stays unless its version is gone.
async function pollModels() {
  if (document.hidden || !state.models.length) return;
  let overview;
  try { overview = await getJson("/models"); } catch { return; }  // a failed poll says nothing new
  const signature = (models) => JSON.stringify(models.map((m) => [m.name, m.versions, m.default_version]));
  if (signature(overview.models) === signature(state.models)) return;
  const [name, version] = [$("model").value, Number($("version").value)];
  state.models = overview.models;
  const model = state.models.find((m) => m.name === name);
  $("model").replaceChildren(...state.models.map((m) => new Option(`${m.name} (${m.kind}, K=${m.latent_dim})`, m.name,
    m.name === (model ? name : overview.default_model), m.name === (model ? name : overview.default_model))));
  if (model && model.versions.includes(version)) {
    $("version").replaceChildren(...model.versions.map((v) => new Option(`${v}`, v, v === version, v === version)));
  } else {
    fillVersions();
  }
  state.polls = (state.polls || 0) + 1;
}
