// Pixels: 784 numbers in [0, 1] onto a canvas (grey, or a red/blue diverging map for signed differences), and the
// drawing pad's strokes (or a dropped PNG) to 784 numbers centred the way MNIST's digits are.

export function drawGrey(canvas, pixels) {
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const g = Math.round(Math.min(Math.max(pixels[i], 0), 1) * 255);
    image.data.set([g, g, g, 255], 4 * i);
  }
  canvas.width = 28;
  canvas.height = 28;
  ctx.putImageData(image, 0, 0);
}

// Signed values, scaled so that `limit` is full colour: red positive, blue negative, white zero.
export function drawSigned(canvas, values, limit) {
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  const top = limit || Math.max(...values.map(Math.abs)) || 1;
  for (let i = 0; i < 784; i++) {
    const t = Math.min(Math.abs(values[i]) / top, 1);
    const fade = Math.round(255 * (1 - t));
    image.data.set(values[i] >= 0 ? [255, fade, fade, 255] : [fade, fade, 255, 255], 4 * i);
  }
  canvas.width = 28;
  canvas.height = 28;
  ctx.putImageData(image, 0, 0);
}

export function newCanvas(label) {
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  return canvas;
}

// MNIST's preprocessing: the ink's bounding box scaled to fit 20x20, then placed so that its centre of mass is at
// the centre of the 28x28 image. `source` is a canvas with white ink on black.
export function toMnist(source) {
  const { width, height } = source;
  const data = source.getContext("2d").getImageData(0, 0, width, height).data;
  let x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[4 * (y * width + x)] > 20) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    }
  }
  if (x1 < 0) return null;
  const w = x1 - x0 + 1, h = y1 - y0 + 1, fit = 20 / Math.max(w, h);
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const ctx = small.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, 28, 28);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, x0, y0, w, h, (28 - w * fit) / 2, (28 - h * fit) / 2, w * fit, h * fit);
  const grey = ctx.getImageData(0, 0, 28, 28).data;
  const pixels = Array.from({ length: 784 }, (_, i) => grey[4 * i] / 255);
  return shiftToCentreOfMass(pixels);
}

function shiftToCentreOfMass(pixels) {
  let total = 0, mx = 0, my = 0;
  pixels.forEach((p, i) => { total += p; mx += p * (i % 28); my += p * Math.floor(i / 28); });
  const dx = Math.round(13.5 - mx / total), dy = Math.round(13.5 - my / total);
  const out = new Array(784).fill(0);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const sx = x - dx, sy = y - dy;
      if (sx >= 0 && sx < 28 && sy >= 0 && sy < 28) out[y * 28 + x] = pixels[sy * 28 + sx];
    }
  }
  return out;
}

// A drawing pad on `canvas` (pointer events: mouse, pen and touch); calls onStroke() when a stroke ends.
export function drawingPad(canvas, onStroke) {
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let last = null;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
  };
  const line = (from, to) => {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = canvas.width / 12;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = at(e);
    line(last, last);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = at(e);
    line(last, p);
    last = p;
  });
  const end = () => { if (last) { last = null; onStroke(); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  return { clear };
}

// A PNG file drawn onto the pad (dark ink on a light background is inverted to MNIST's white on black).
export async function loadPng(file, canvas) {
  const bitmap = await createImageBitmap(file);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
  let sum = 0;
  for (let i = 0; i < image.data.length; i += 4) {
    const g = 0.299 * image.data[i] + 0.587 * image.data[i + 1] + 0.114 * image.data[i + 2];
    image.data[i] = image.data[i + 1] = image.data[i + 2] = g;
    sum += g;
  }
  if (sum / (image.data.length / 4) > 127) {
    for (let i = 0; i < image.data.length; i += 4) image.data[i] = image.data[i + 1] = image.data[i + 2] = 255 - image.data[i];
  }
  ctx.putImageData(image, 0, 0);
}
