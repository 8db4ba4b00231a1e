// The latent map: the embedding's points coloured by digit, ±1 sd ellipses on a subset, the density contour, the
// user's marks (drawn digit, interpolation ends), zoom (wheel, +/-) and pan (shift-drag, arrow keys).
import { contour, density, ellipse } from "./geometry.js";

// Okabe & Ito's colour-blind-safe eight, with Paul Tol's grey and wine for 8 and 9: the report PNGs' colours too
// (lvm/reports.py's DIGIT_COLOURS, which tests/unit/test_palette.py checks this list against).
export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7",
                        "#56B4E9", "#F0E442", "#000000", "#999999", "#882255"];
const SD_POINTS = 300;  // ellipses on every point would hide the map
const CLICK_PX = 4;

export class LatentMap {
  constructor(canvas, { onPoint, onClick, onView }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    Object.assign(this, { onPoint, onClick, onView });
    this.points = new Float32Array(0);
    this.labels = new Uint8Array(0);
    this.sd = [];
    this.marks = { drawn: null, a: null, b: null, cursor: null, digit: null };
    this.options = { sd: true, density: true };
    this.home = { cx: 0, cy: 0, scale: 80 };
    this.view = { ...this.home };
    this._densityCache = null;
    this._listen();
  }

  setData(points, labels, sd) {
    this.points = points;
    this.labels = labels;
    this.sd = sd.slice(0, SD_POINTS);
    this._densityCache = null;
    this._baseKey = null;
    this.home = points.length ? this._fit(points) : { cx: 0, cy: 0, scale: this.canvas.width / 7 };
    this.resetView();
  }

  resetView() {
    this.view = { ...this.home };
    this._changed();
  }

  // Screen <-> map coordinates (y grows upwards on the map).
  toScreen(u, v) {
    return [this.canvas.width / 2 + (u - this.view.cx) * this.view.scale,
            this.canvas.height / 2 - (v - this.view.cy) * this.view.scale];
  }

  toMap(x, y) {
    return [this.view.cx + (x - this.canvas.width / 2) / this.view.scale,
            this.view.cy - (y - this.canvas.height / 2) / this.view.scale];
  }

  bounds() {
    const [x0, y1] = this.toMap(0, 0), [x1, y0] = this.toMap(this.canvas.width, this.canvas.height);
    return { x0, x1, y0, y1 };
  }

  zoom(factor, x = this.canvas.width / 2, y = this.canvas.height / 2) {
    const [u, v] = this.toMap(x, y);
    this.view.scale *= factor;
    this.view.cx = u - (x - this.canvas.width / 2) / this.view.scale;
    this.view.cy = v + (y - this.canvas.height / 2) / this.view.scale;
    this._changed();
  }

  pan(dx, dy) {
    this.view.cx -= dx / this.view.scale;
    this.view.cy += dy / this.view.scale;
    this._changed();
  }

  densityOf(view) {
    const key = JSON.stringify(view);
    if (!this._densityCache || this._densityCache.key !== key) {
      this._densityCache = { key, value: this.points.length ? density(this.points, view) : null };
    }
    return this._densityCache.value;
  }

  // The points, ellipses and contours change only with the data or the view: they are drawn once into `base`, and
  // each pointer move only copies it and adds the marks.
  draw() {
    const { ctx, canvas } = this;
    const key = JSON.stringify([this.view, this.options]);
    if (this._baseKey !== key) {
      this._baseKey = key;
      this._drawBase();
    }
    ctx.drawImage(this._base, 0, 0);
    this._marks();
  }

  _drawBase() {
    this._base ??= document.createElement("canvas");
    Object.assign(this._base, { width: this.canvas.width, height: this.canvas.height });
    const ctx = this._base.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, this._base.width, this._base.height);
    this._axes(ctx);
    if (this.options.density) this.drawContours(ctx, this.bounds(), this._base.width, this._base.height);
    for (let i = 0; i < this.labels.length; i++) {
      const [x, y] = this.toScreen(this.points[2 * i], this.points[2 * i + 1]);
      ctx.fillStyle = PALETTE[this.labels[i]];
      ctx.fillRect(Math.round(x) - 1, Math.round(y) - 1, 3, 3);  // integer squares: exact palette colours
    }
    if (this.options.sd) {
      for (const s of this.sd) this._ellipse(ctx, s.u, s.v, s.e, 1, PALETTE[s.label] + "cc");
    }
  }

  // Density contours of the view's points into a width x height drawing area; also used by the manifold panel.
  drawContours(ctx, view, width, height, rgb = "40, 40, 40") {
    const d = this.densityOf(view);
    if (!d) return;
    ctx.save();
    ctx.lineWidth = 1.5;
    d.levels.forEach((level, i) => {
      ctx.strokeStyle = `rgba(${rgb}, ${i === 0 ? 0.9 : 0.55})`;
      ctx.setLineDash(i === 0 ? [] : [5, 4]);
      ctx.beginPath();
      for (const [[ax, ay], [bx, by]] of contour(d.grid, d.size, level)) {
        ctx.moveTo((ax / d.size) * width, height - (ay / d.size) * height);
        ctx.lineTo((bx / d.size) * width, height - (by / d.size) * height);
      }
      ctx.stroke();
    });
    ctx.restore();
  }

  _ellipse(ctx, u, v, e, k, color, width = 1) {
    const [x, y] = this.toScreen(u, v);
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.beginPath();
    ctx.ellipse(x, y, Math.max(k * e.rx * this.view.scale, 0.5), Math.max(k * e.ry * this.view.scale, 0.5),
                -e.angle, 0, 2 * Math.PI);
    ctx.stroke();
  }

  _marks() {
    const { ctx } = this;
    const { drawn, a, b, cursor, digit } = this.marks;
    if (digit) {  // the selected digit's fitted distribution: each component's 1 and 2 sd ellipses
      for (const c of digit.components) {
        this._ellipse(ctx, c.u, c.v, c.e, 1, "#111", 2.5);
        this._ellipse(ctx, c.u, c.v, c.e, 1, PALETTE[digit.label], 1.5);
        this._ellipse(ctx, c.u, c.v, c.e, 2, PALETTE[digit.label], 1.5);
      }
    }
    if (a && b) {
      ctx.strokeStyle = "#333";
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      ctx.moveTo(...this.toScreen(...a));
      ctx.lineTo(...this.toScreen(...b));
      ctx.stroke();
      ctx.setLineDash([]);
    }
    for (const [label, p] of [["A", a], ["B", b]]) {
      if (!p) continue;
      const [x, y] = this.toScreen(...p);
      // A white disc in a dark ring in a white halo: visible on the dark clusters (7 is black) and on white.
      ctx.fillStyle = "#fff";
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 6;
      ctx.beginPath();
      ctx.arc(x, y, 9, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.fill();
      ctx.strokeStyle = "#111";
      ctx.lineWidth = 2;
      ctx.stroke();
      ctx.lineWidth = 1;
      ctx.fillStyle = "#111";
      ctx.font = "bold 11px system-ui";
      ctx.fillText(label, x - 4, y + 4);
    }
    if (drawn) {
      if (drawn.e) {
        this._ellipse(ctx, drawn.u, drawn.v, drawn.e, 1, "#111", 2.5);
        this._ellipse(ctx, drawn.u, drawn.v, drawn.e, 2, "#111", 1.5);
      }
      const [x, y] = this.toScreen(drawn.u, drawn.v);
      ctx.fillStyle = "#E69F00";
      ctx.strokeStyle = "#111";
      ctx.beginPath();
      ctx.moveTo(x, y - 9); ctx.lineTo(x + 8, y + 6); ctx.lineTo(x - 8, y + 6); ctx.closePath();
      ctx.fill();
      ctx.stroke();
    }
    if (cursor) {
      const [x, y] = this.toScreen(...cursor);
      ctx.strokeStyle = "rgba(0, 0, 0, 0.6)";
      ctx.beginPath();
      ctx.moveTo(x - 10, y); ctx.lineTo(x + 10, y); ctx.moveTo(x, y - 10); ctx.lineTo(x, y + 10);
      ctx.stroke();
    }
  }

  _axes(ctx) {
    const { canvas } = this;
    const { x0, x1, y0, y1 } = this.bounds();
    const step = niceStep((x1 - x0) / 8);
    ctx.font = "11px system-ui";
    ctx.fillStyle = "#5b6570";
    ctx.strokeStyle = "#eceff2";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let u = Math.ceil(x0 / step) * step; u <= x1; u += step) {
      const [x] = this.toScreen(u, 0);
      ctx.moveTo(Math.round(x) + 0.5, 0); ctx.lineTo(Math.round(x) + 0.5, canvas.height);
      ctx.fillText(fmt(u), x + 2, canvas.height - 4);
    }
    for (let v = Math.ceil(y0 / step) * step; v <= y1; v += step) {
      const [, y] = this.toScreen(0, v);
      ctx.moveTo(0, Math.round(y) + 0.5); ctx.lineTo(canvas.width, Math.round(y) + 0.5);
      ctx.fillText(fmt(v), 3, y - 2);
    }
    ctx.stroke();
  }

  _fit(points) {
    // The central 99% of the points on each axis: outliers would squash the cloud into a corner.
    const range = (offset) => {
      const values = Float32Array.from({ length: points.length / 2 }, (_, i) => points[2 * i + offset]).sort();
      return [values[Math.floor(values.length * 0.005)], values[Math.floor(values.length * 0.995)]];
    };
    const [ux, vx] = range(0), [uy, vy] = range(1);
    const scale = 0.9 * Math.min(this.canvas.width / (vx - ux || 1), this.canvas.height / (vy - uy || 1));
    return { cx: (ux + vx) / 2, cy: (uy + vy) / 2, scale };
  }

  _changed() {
    this.draw();
    this.onView?.(this.bounds());
  }

  _listen() {
    const c = this.canvas;
    let drag = null;
    const local = (e) => {
      const r = c.getBoundingClientRect();
      return [((e.clientX - r.left) * c.width) / r.width, ((e.clientY - r.top) * c.height) / r.height];
    };
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      const [x, y] = local(e);
      drag = { x, y, x0: x, y0: y, pan: e.shiftKey || e.button === 1 };
      if (!drag.pan) this.onPoint(...this.toMap(x, y), true);
    });
    c.addEventListener("pointermove", (e) => {
      const [x, y] = local(e);
      if (drag?.pan) {
        this.pan(x - drag.x, y - drag.y);
        drag.x = x; drag.y = y;
        return;
      }
      this.marks.cursor = this.toMap(x, y);
      this.draw();
      this.onPoint(...this.marks.cursor, drag !== null);
    });
    c.addEventListener("pointerup", (e) => {
      const [x, y] = local(e);
      if (drag && !drag.pan && Math.hypot(x - drag.x0, y - drag.y0) < CLICK_PX) this.onClick(...this.toMap(x, y));
      drag = null;
    });
    c.addEventListener("pointercancel", () => { drag = null; });
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.zoom(Math.exp(-e.deltaY / 500), ...local(e));
    }, { passive: false });
    c.addEventListener("keydown", (e) => {
      const moves = { ArrowLeft: [40, 0], ArrowRight: [-40, 0], ArrowUp: [0, 40], ArrowDown: [0, -40] };
      if (moves[e.key]) this.pan(...moves[e.key]);
      else if (e.key === "+" || e.key === "=") this.zoom(1.25);
      else if (e.key === "-") this.zoom(0.8);
      else if (e.key === "0") this.resetView();
      else if (e.key === "Enter") this.onClick(this.view.cx, this.view.cy);
      else return;
      e.preventDefault();
      this.onPoint(this.view.cx, this.view.cy, false);
    });
  }
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
}

function fmt(x) {
  return Math.abs(x) < 1e-9 ? "0" : Number(x.toPrecision(3)).toString();
}
