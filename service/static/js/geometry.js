// The maths of the map: the 2-D projection of K-dimensional codes, the test set's density (a Gaussian KDE on a
// grid, computed here from the embedding) and its contour lines (marching squares), and covariance ellipses.

// Projection: identity for K <= 2; for K > 2 the plane through the codes' mean spanned by their two principal axes
// (the top eigenvectors of the means' covariance, by power iteration). A map point (u, v) decodes at
// z = centre + u * axis0 + v * axis1, so the map and the decoded images agree.
export function makeProjection(means, k) {
  const centre = new Float64Array(k);
  if (k <= 2) {
    const axes = [0, 1].slice(0, k).map((i) => Array.from({ length: k }, (_, j) => (i === j ? 1 : 0)));
    return { k, centre, axes, name: k === 1 ? "z[0]" : "z[0], z[1]" };
  }
  const n = means.length / k;
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) centre[j] += means[i * k + j] / n;
  const cov = Array.from({ length: k }, () => new Float64Array(k));
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < k; a++) {
      const da = means[i * k + a] - centre[a];
      for (let b = 0; b < k; b++) cov[a][b] += (da * (means[i * k + b] - centre[b])) / n;
    }
  }
  const axes = [];
  for (let c = 0; c < 2; c++) {
    let v = Array.from({ length: k }, (_, j) => ((j * 7 + c * 3) % 5) + 1);
    for (let it = 0; it < 200; it++) {
      let w = cov.map((row) => row.reduce((s, x, j) => s + x * v[j], 0));
      for (const prev of axes) {  // deflate: stay orthogonal to the axes already found
        const d = w.reduce((s, x, j) => s + x * prev[j], 0);
        w = w.map((x, j) => x - d * prev[j]);
      }
      const norm = Math.hypot(...w) || 1;
      v = w.map((x) => x / norm);
    }
    axes.push(v);
  }
  return { k, centre, axes, name: "first two principal axes of the codes" };
}

export function project(p, row) {
  const u = [0, 0];
  for (let a = 0; a < p.axes.length; a++) {
    for (let j = 0; j < p.k; j++) u[a] += (row[j] - p.centre[j]) * p.axes[a][j];
  }
  return u;
}

export function unproject(p, u) {
  const z = Array.from(p.centre);
  for (let a = 0; a < p.axes.length; a++) for (let j = 0; j < p.k; j++) z[j] += u[a] * p.axes[a][j];
  return z;
}

// The 2x2 covariance of a full K x K covariance seen in the map's plane: A C Aᵀ with A the projection's axes.
export function projectedFullCovariance(p, cov) {
  const c = [[0, 0], [0, 0]];
  for (let a = 0; a < 2; a++) {
    for (let b = 0; b < 2; b++) {
      for (let i = 0; i < p.k; i++) {
        for (let j = 0; j < p.k; j++) c[a][b] += (p.axes[a]?.[i] ?? 0) * cov[i][j] * (p.axes[b]?.[j] ?? 0);
      }
    }
  }
  return c;
}

// The 2x2 covariance of a diagonal Gaussian N(., diag(scale^2)) seen in the map's plane.
export function projectedCovariance(p, scale) {
  const c = [[0, 0], [0, 0]];
  for (let a = 0; a < 2; a++) {
    for (let b = 0; b < 2; b++) {
      for (let j = 0; j < p.k; j++) c[a][b] += (p.axes[a]?.[j] ?? 0) * (p.axes[b]?.[j] ?? 0) * scale[j] ** 2;
    }
  }
  return c;
}

// Semi-axes and angle of the 1-sd ellipse of a 2x2 covariance.
export function ellipse(c) {
  const t = (c[0][0] + c[1][1]) / 2, d = Math.sqrt(((c[0][0] - c[1][1]) / 2) ** 2 + c[0][1] ** 2);
  return { rx: Math.sqrt(Math.max(t + d, 0)), ry: Math.sqrt(Math.max(t - d, 0)),
           angle: 0.5 * Math.atan2(2 * c[0][1], c[0][0] - c[1][1]) };
}

// Gaussian KDE of the points (u, v) on a size x size grid over [x0, x1] x [y0, y1]: binning, then a separable
// Gaussian blur with Scott's bandwidth per axis. Returns densities (row 0 at y0) and the levels that enclose about
// 50% and 90% of the points inside the grid.
export function density(points, view, size = 80) {
  const { x0, x1, y0, y1 } = view;
  const grid = new Float64Array(size * size);
  const n = points.length / 2;
  let mx = 0, my = 0, sx = 0, sy = 0;
  for (let i = 0; i < n; i++) { mx += points[2 * i] / n; my += points[2 * i + 1] / n; }
  for (let i = 0; i < n; i++) { sx += (points[2 * i] - mx) ** 2 / n; sy += (points[2 * i + 1] - my) ** 2 / n; }
  const factor = n ** (-1 / 6);  // Scott's rule in two dimensions
  const hx = (Math.sqrt(sx) * factor * size) / (x1 - x0), hy = (Math.sqrt(sy) * factor * size) / (y1 - y0);
  for (let i = 0; i < n; i++) {
    const gx = Math.floor(((points[2 * i] - x0) / (x1 - x0)) * size);
    const gy = Math.floor(((points[2 * i + 1] - y0) / (y1 - y0)) * size);
    if (gx >= 0 && gx < size && gy >= 0 && gy < size) grid[gy * size + gx] += 1;
  }
  const blurred = blur(blur(grid, size, hx, 1), size, hy, size);
  const sorted = Array.from(blurred).sort((a, b) => b - a);
  const total = sorted.reduce((s, x) => s + x, 0);
  const levels = [0.5, 0.9].map((mass) => {
    let acc = 0;
    for (const value of sorted) { acc += value; if (acc >= mass * total) return value; }
    return sorted[sorted.length - 1];
  });
  return { grid: blurred, size, levels };
}

function blur(grid, size, h, stride) {
  const radius = Math.max(1, Math.ceil(3 * h)), weights = [];
  for (let d = -radius; d <= radius; d++) weights.push(Math.exp(-0.5 * (d / Math.max(h, 0.3)) ** 2));
  const out = new Float64Array(grid.length);
  const other = stride === 1 ? size : 1;
  for (let line = 0; line < size; line++) {
    for (let i = 0; i < size; i++) {
      let acc = 0;
      for (let d = -radius; d <= radius; d++) {
        const j = i + d;
        if (j >= 0 && j < size) acc += weights[d + radius] * grid[line * other + j * stride];
      }
      out[line * other + i * stride] = acc;
    }
  }
  return out;
}

// Marching squares: the segments where the grid crosses `level`, in grid coordinates (cell centres at i + 0.5).
export function contour(grid, size, level) {
  const segments = [];
  const at = (x, y) => grid[y * size + x];
  const cross = (a, b, va, vb) => a + (level - va) / (vb - va) * (b - a);
  for (let y = 0; y < size - 1; y++) {
    for (let x = 0; x < size - 1; x++) {
      const v = [at(x, y), at(x + 1, y), at(x + 1, y + 1), at(x, y + 1)];
      const corners = [[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1]];
      const points = [];
      for (let e = 0; e < 4; e++) {
        const a = e, b = (e + 1) % 4;
        if ((v[a] >= level) !== (v[b] >= level)) {
          points.push([cross(corners[a][0], corners[b][0], v[a], v[b]) + 0.5,
                       cross(corners[a][1], corners[b][1], v[a], v[b]) + 0.5]);
        }
      }
      if (points.length === 2) segments.push(points);
      else if (points.length === 4) segments.push([points[0], points[1]], [points[2], points[3]]);
    }
  }
  return segments;
}
