// "How likely is this drawing?": the drawn digit's /score (log-likelihood, percentile among the version's reference
// set, outlier verdict) and a histogram of the reference set's log-likelihoods with the drawing marked.
import { ApiError, getJson, postJson, query } from "./api.js";

const $ = (id) => document.getElementById(id);
const references = new Map();  // "model/version" -> the reference route's JSON, or null for a version without one
let latest = 0;  // only the newest drawing's answer is shown

async function reference(model, version) {
  const key = `${model}/${version}`;
  if (!references.has(key)) {
    try {
      references.set(key, await getJson(`/models/${encodeURIComponent(model)}/versions/${version}/reference`));
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      references.set(key, null);
    }
  }
  return references.get(key);
}

function drawHistogram(canvas, ref, value) {
  const ctx = canvas.getContext("2d"), { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const { edges, counts } = ref.log_likelihood;
  const lo = edges[0], hi = edges[edges.length - 1], top = Math.max(...counts);
  const x = (v) => ((Math.min(Math.max(v, lo), hi) - lo) / (hi - lo)) * (width - 2) + 1;
  ctx.fillStyle = "#8a94a6";
  counts.forEach((n, i) => {
    const h = (n / top) * (height - 14);
    ctx.fillRect(x(edges[i]), height - 12 - h, Math.max(1, x(edges[i + 1]) - x(edges[i]) - 1), h);
  });
  ctx.fillStyle = "#d33";
  ctx.fillRect(x(value) - 1, 0, 3, height - 12);
  ctx.fillStyle = "#666";
  ctx.font = "10px sans-serif";
  ctx.fillText(lo.toFixed(0), 1, height - 1);
  const right = hi.toFixed(0);
  ctx.fillText(right, width - ctx.measureText(right).width - 1, height - 1);
  canvas.setAttribute("aria-label", `Histogram of the log-likelihoods of the ${ref.count} reference images ` +
    `(${ref.images}); the red line marks the drawing at ${value.toFixed(1)} nats`);
}

// Scores the drawing under the chosen version; null pixels (an empty pad) clear the panel.
export async function showScore(target, pixels) {
  const ticket = ++latest;
  if (!pixels) {
    $("score").textContent = "";
    $("score-hist").hidden = true;
    return;
  }
  const { model, version } = target;
  const body = await postJson(`/score${query(model, version)}`, { images: [pixels], samples: 100, seed: 0 });
  const ll = body.log_likelihood[0], percentile = body.percentile?.[0], outlier = body.outlier?.[0];
  // A version without a reference set gives no percentile: then there is no histogram to ask for either.
  const ref = percentile == null ? null : await reference(model, version);
  if (ticket !== latest) return;
  const verdict = outlier == null ? "no reference set: no verdict"
    : outlier ? `outlier: fewer than ${(100 * ref.false_positive_rate).toFixed(0)}% of reference digits are this atypical`
      : "typical of the reference digits";
  $("score").replaceChildren(
    Object.assign(document.createElement("strong"), { className: outlier ? "outlier" : "typical", textContent: verdict }),
    Object.assign(document.createElement("span"), {
      className: "mono",
      textContent: ` log-likelihood ${ll.toFixed(1)} nats` + (percentile == null ? "" : ` · percentile ${percentile.toFixed(1)}`),
    }));
  $("score-hist").hidden = !ref;
  if (ref) drawHistogram($("score-hist"), ref, ll);
}
