// The panels that only read: PCA's components as images, and a version's metrics and report PNGs.
import { getBlobUrl, postJson, query } from "./api.js";
import { drawSigned, newCanvas } from "./images.js";

const $ = (id) => document.getElementById(id);

export async function components(target, busy, showError) {
  const { model, version, k } = target;
  const latents = [new Array(k).fill(0), ...Array.from({ length: k }, (_, i) => Array.from({ length: k }, (_, j) => +(i === j)))];
  try {
    const { images } = await busy("pca-section", () => postJson(`/decode${query(model, version)}`, { latents }));
    const diffs = images.slice(1).map((img) => img.map((x, i) => x - images[0][i]));
    const limit = Math.max(...diffs.flat().map(Math.abs));
    $("components").replaceChildren(...diffs.map((d, i) => {
      const figure = document.createElement("figure"), canvas = newCanvas(`principal component ${i + 1}`);
      drawSigned(canvas, d, limit);
      const caption = document.createElement("figcaption");
      caption.textContent = `component ${i + 1}`;
      figure.append(canvas, caption);
      return figure;
    }));
  } catch (err) {
    showError("Decoding the components", err);
  }
}

// `detailPromise`: GET /models/{name}, which the page asks once per chosen version.
export async function loadReport(target, detailPromise, busy, showError) {
  const { model, version } = target;
  try {
    const detail = await busy("report-section", () => detailPromise);
    const manifest = detail.versions.find((m) => m.version === version);
    const rows = Object.entries(manifest.metrics).map(([key, value]) => {
      const tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
      th.textContent = key;
      td.textContent = typeof value === "number" ? Number(value.toPrecision(6)).toString() : JSON.stringify(value);
      td.className = "num";
      tr.append(th, td);
      return tr;
    });
    const table = document.createElement("table"), note = document.createElement("p");
    table.append(...rows);
    note.className = "muted";
    const from = manifest.derived_from;
    note.textContent = from ? `Derived from version ${from.version}: ${from.reason}.` : `Trained ${manifest.created_at}.`;
    $("metrics").replaceChildren(note, table);
    // The server's list of what it serves (not the manifest's files: one unknown entry there would fail them all),
    // and each picture on its own: one that cannot be fetched leaves the others and the metrics in place.
    const files = detail.reports?.[String(version)] ?? [];
    const images = await Promise.allSettled(files.map(async (file) => {
      const img = document.createElement("img"), button = document.createElement("button");
      img.alt = `${model}/${version} report: ${file.replace(".png", "")} plot`;
      img.src = await getBlobUrl(`/models/${model}/versions/${version}/report/${file}`);
      // A click enlarges the picture to the panel's full width, another shrinks it back.
      button.type = "button";
      button.title = "Enlarge";
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => {
        const big = button.classList.toggle("enlarged");
        button.setAttribute("aria-pressed", String(big));
        button.title = big ? "Shrink" : "Enlarge";
      });
      button.append(img);
      return button;
    }));
    $("report").replaceChildren(...images.filter((r) => r.status === "fulfilled").map((r) => r.value));
  } catch (err) {
    showError("Loading the report", err);
  }
}
