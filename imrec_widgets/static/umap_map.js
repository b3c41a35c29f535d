// @ts-check
// The map's front end: draws every point of a UmapExplorer with WebGL inside its bqplot Figure,
// and turns the pointer into intent (lasso, brush, click, hover) that goes to Python as
// geometry in map coordinates. Python computes the selected ids over every image; nothing here
// decides what is selected.
//
// The Figure keeps its scales, PanZoom and small SVG marks (result rings, the query marker); this
// module adds a <canvas> under those marks and a gesture layer over them, both placed on the
// figure's plot area, and maps data to pixels with the figure's own padded ranges, so the points
// and bqplot's marks line up. anywidget calls the default export; the named exports are pure
// helpers that `node --test` imports.

/** Tools whose gestures this layer handles (with "pan/zoom" bqplot's PanZoom has the pointer). */
export const GESTURE_TOOLS = ["lasso", "brush", "click"];
/** Lasso vertices closer than this (pixels) to the previous one are dropped. */
export const LASSO_STEP_PX = 2;
/** A gesture that moves less than this (pixels) is a click. */
export const CLICK_SLOP_PX = 3;
/** Hover requests go to Python at most this often (milliseconds). */
export const HOVER_INTERVAL_MS = 60;
/** The point under the pointer must be within this many pixels. */
export const HOVER_RADIUS_PX = 8;
/** Zoom factor per wheel pixel (bqplot's PanZoom uses the same). */
export const WHEEL_ZOOM_RATE = 0.001;
/** The wheel zooms no deeper than this view span relative to the coordinates' magnitude. */
export const MIN_RELATIVE_SPAN = 1e-9;
/** How long a shown map waits for bqplot's figure view before saying it is unsupported (ms). */
export const FIGURE_DEADLINE_MS = 10_000;
/** How long a lost WebGL context may take to come back before the SVG map replaces it (ms). */
export const CONTEXT_RESTORE_MS = 3_000;
/** While the view moves, each frame draws a subsample sized to cost about this much (ms). */
export const FRAME_BUDGET_MS = 25;
/** A moving frame never draws fewer points than this (or all of them, when fewer). */
export const MIN_MOVING_POINTS = 20_000;
/** The rest of the points in view are drawn once the view has not moved for this long (ms) ... */
export const SETTLE_MS = 100;
/** ... or for 1.5 times the last gap between moves (a slow page's wheel events), up to this. */
export const MAX_SETTLE_MS = 300;
/** Cells per side of the grid that spreads a subsample evenly over the map. */
export const LOD_GRID = 128;
/** Cells per side of the grid that finds the points a zoomed-in view can show. */
export const CULL_GRID = 64;

/**
 * The domain after zooming by `factor` (< 1 zooms in) around the data value `at`.
 * @param {[number, number]} domain
 * @param {number} at
 * @param {number} factor
 * @returns {[number, number]}
 */
export function zoomDomain(domain, at, factor) {
  return [at + (domain[0] - at) * factor, at + (domain[1] - at) * factor];
}

/**
 * The affine map from data to pixels along one axis: pixel = a * value + b.
 * @param {[number, number]} domain data values at the two ends of `range`
 * @param {[number, number]} range pixels (may be reversed, as a y axis is)
 * @returns {{a: number, b: number}}
 */
export function axisMap(domain, range) {
  const span = domain[1] - domain[0];
  const a = span === 0 ? 0 : (range[1] - range[0]) / span;
  return { a, b: range[0] - a * domain[0] };
}

/**
 * Data value of a pixel under `axisMap(domain, range)`.
 * @param {{a: number, b: number}} map
 * @param {number} pixel
 */
export function pixelToData(map, pixel) {
  return map.a === 0 ? -map.b : (pixel - map.b) / map.a;
}

/**
 * Default point size in pixels for `count` points: larger for small maps, 2 px at a million.
 * @param {number} count
 */
export function defaultPointSize(count) {
  if (count <= 2_000) return 8;
  if (count <= 20_000) return 6;
  if (count <= 200_000) return 4;
  if (count <= 600_000) return 3;
  return 2;
}

/**
 * Append `point` to a lasso path unless it is within `step` pixels of the last vertex.
 * @param {number[][]} path
 * @param {number[]} point
 * @param {number} [step]
 * @returns {boolean} whether it was added
 */
export function extendPath(path, point, step = LASSO_STEP_PX) {
  const last = path[path.length - 1];
  if (last && Math.hypot(point[0] - last[0], point[1] - last[1]) < step) return false;
  path.push(point);
  return true;
}

/**
 * The largest extent of a set of pixel points (how far a gesture moved).
 * @param {number[][]} path
 */
export function pathExtent(path) {
  if (path.length === 0) return 0;
  const xs = path.map((p) => p[0]);
  const ys = path.map((p) => p[1]);
  return Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys));
}

/**
 * RGBA bytes (4 per colour) of CSS hex colours "#rgb" or "#rrggbb"; unknown ones are grey.
 * @param {string[]} colors
 * @returns {Uint8Array}
 */
export function paletteBytes(colors) {
  const out = new Uint8Array(Math.max(1, colors.length) * 4);
  out.fill(160);
  colors.forEach((color, i) => {
    let hex = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(color) ? color.slice(1) : "a0a0a0";
    if (hex.length === 3) hex = hex.split("").map((c) => c + c).join("");
    for (let k = 0; k < 3; k++) out[i * 4 + k] = parseInt(hex.slice(2 * k, 2 * k + 2), 16);
    out[i * 4 + 3] = 255;
  });
  return out;
}

/**
 * Where to put a tooltip of `size` next to the pointer at `at`, kept inside `bounds`.
 * @param {number[]} at pointer (x, y) in the container's pixels
 * @param {number[]} size tooltip (width, height)
 * @param {number[]} bounds container (width, height)
 * @param {number} [gap]
 */
export function tooltipPosition(at, size, bounds, gap = 12) {
  let x = at[0] + gap;
  let y = at[1] + gap;
  if (x + size[0] > bounds[0]) x = at[0] - gap - size[0];
  if (y + size[1] > bounds[1]) y = at[1] - gap - size[1];
  return [Math.max(0, x), Math.max(0, y)];
}

/**
 * The data -> clip-space transform the shader applies to positions relative to `center`:
 * clip = (x - cx) * sx + ox, (y - cy) * sy + oy. Subtracting a centre near the view (in float32,
 * exact for points near it) before scaling keeps a deep zoom exact, where `a * x + b` in float32
 * would lose the low bits of `x` against the large, cancelling `a * x` and `b`.
 * @param {{a: number, b: number}} xMap data -> CSS pixels @param {{a: number, b: number}} yMap
 * @param {number} width CSS pixels @param {number} height @param {[number, number]} center
 */
export function clipTransform(xMap, yMap, width, height, center) {
  const [cx, cy] = center;
  return {
    scale: [(2 * xMap.a) / width, (-2 * yMap.a) / height],
    offset: [(2 * (xMap.a * cx + xMap.b)) / width - 1, 1 - (2 * (yMap.a * cy + yMap.b)) / height],
  };
}

/**
 * A float32 point near the middle of `domain` (what the shader subtracts before scaling).
 * @param {[number, number]} domain
 */
export function viewCenter(domain) {
  return Math.fround((domain[0] + domain[1]) / 2);
}

/**
 * The bounding box [x0, x1, y0, y1] of the first `count` points; NaN coordinates are left out,
 * and with none left x0 > x1 (Infinity, -Infinity).
 * @param {Float32Array} x @param {Float32Array} y @param {number} count
 * @returns {[number, number, number, number]}
 */
function boundingBox(x, y, count) {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < count; i++) {
    const [xi, yi] = [x[i], y[i]];
    if (xi < x0) x0 = xi;
    if (xi > x1) x1 = xi;
    if (yi < y0) y0 = yi;
    if (yi > y1) y1 = yi;
  }
  return [x0, x1, y0, y1];
}

/**
 * An order of the points whose every prefix is spread evenly over the map: one point of each
 * occupied cell of a `grid` x `grid` grid, then a second of each, and so on; cells and points
 * taken in a fixed pseudo-random order, so a prefix favours no region and never changes.
 * @param {Float32Array} x @param {Float32Array} y @param {number} [grid]
 * @returns {Uint32Array}
 */
export function lodOrder(x, y, grid = LOD_GRID) {
  const count = Math.min(x.length, y.length);
  const order = new Uint32Array(count);
  if (count === 0) return order;
  const [x0, x1, y0, y1] = boundingBox(x, y, count);
  const sx = x1 > x0 ? grid / (x1 - x0) : 0;
  const sy = y1 > y0 ? grid / (y1 - y0) : 0;
  // With step coprime to count, i -> (i + step) % count visits every point once, scattered.
  let step = Math.max(1, Math.floor(count * 0.6180339887));
  while (gcd(step, count) !== 1) step += 1;
  const taken = new Uint32Array(grid * grid);
  const rank = new Uint32Array(count);
  let maxRank = 0;
  for (let k = 0, i = 0; k < count; k++, i = (i + step) % count) {
    const cx = Math.min(grid - 1, Math.max(0, Math.floor((x[i] - x0) * sx) || 0));
    const cy = Math.min(grid - 1, Math.max(0, Math.floor((y[i] - y0) * sy) || 0));
    const r = taken[cy * grid + cx]++;
    rank[i] = r;
    if (r > maxRank) maxRank = r;
  }
  const starts = new Uint32Array(maxRank + 2);
  for (let i = 0; i < count; i++) starts[rank[i] + 1]++;
  for (let r = 1; r < starts.length; r++) starts[r] += starts[r - 1];
  for (let k = 0, i = 0; k < count; k++, i = (i + step) % count) order[starts[rank[i]]++] = i;
  return order;
}

/** @param {number} a @param {number} b */
function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * The draw order: `lod` with the selected points moved to the end (drawn last, on top of the
 * faded ones), each part keeping its even spread. `selected` counts the points in the last part.
 * @param {Uint32Array} lod @param {Uint8Array} mask one byte per point; empty: nothing selected
 * @returns {{order: Uint32Array, selected: number}}
 */
export function drawOrder(lod, mask) {
  if (mask.length < lod.length) return { order: lod, selected: 0 };
  const order = new Uint32Array(lod.length);
  let front = 0;
  let selected = 0;
  for (let k = 0; k < lod.length; k++) if (!mask[lod[k]]) order[front++] = lod[k];
  for (let k = 0; k < lod.length; k++) if (mask[lod[k]]) order[front + selected++] = lod[k];
  return { order, selected };
}

/**
 * How many points a moving frame draws: what fits `budgetMs` at the measured cost per point,
 * at least `minimum`, at most `total`.
 * @param {number} total @param {number} msPerPoint @param {number} [budgetMs] @param {number} [minimum]
 */
export function movingCount(total, msPerPoint, budgetMs = FRAME_BUDGET_MS, minimum = MIN_MOVING_POINTS) {
  if (!(msPerPoint > 0)) return total;
  return Math.min(total, Math.max(minimum, Math.floor(budgetMs / msPerPoint)));
}

/**
 * The cell of each point in a `grid` x `grid` grid over the points' bounding box (row-major, as
 * `cellRange` counts them), and that box; NaN coordinates fall in cell 0.
 * @param {Float32Array} x @param {Float32Array} y @param {number} [grid]
 * @returns {{cells: Uint16Array, bounds: [number, number, number, number], grid: number}}
 */
export function gridCells(x, y, grid = CULL_GRID) {
  const count = Math.min(x.length, y.length);
  const cells = new Uint16Array(count);
  const [x0, x1, y0, y1] = boundingBox(x, y, count);
  if (!(x1 >= x0 && y1 >= y0)) return { cells, bounds: [0, 0, 0, 0], grid };
  const sx = x1 > x0 ? grid / (x1 - x0) : 0;
  const sy = y1 > y0 ? grid / (y1 - y0) : 0;
  for (let i = 0; i < count; i++) {
    const cx = Math.min(grid - 1, Math.max(0, Math.floor((x[i] - x0) * sx) || 0));
    const cy = Math.min(grid - 1, Math.max(0, Math.floor((y[i] - y0) * sy) || 0));
    cells[i] = cy * grid + cx;
  }
  return { cells, bounds: [x0, x1, y0, y1], grid };
}

/**
 * The cells of `gridCells` that hold every point inside the data rectangle `rect`
 * ([xmin, xmax, ymin, ymax]) as [cx0, cx1, cy0, cy1], inclusive; null when none can.
 * Computed as `gridCells` places points, so a point inside `rect` is always in the range.
 * @param {[number, number, number, number]} bounds @param {number} grid
 * @param {[number, number, number, number]} rect
 * @returns {[number, number, number, number] | null}
 */
export function cellRange(bounds, grid, rect) {
  const [x0, x1, y0, y1] = bounds;
  const sx = x1 > x0 ? grid / (x1 - x0) : 0;
  const sy = y1 > y0 ? grid / (y1 - y0) : 0;
  if (rect[1] < x0 || rect[0] > x1 || rect[3] < y0 || rect[2] > y1) return null;
  const clamp = (/** @type {number} */ v) => Math.min(grid - 1, Math.max(0, Math.floor(v) || 0));
  return [clamp((rect[0] - x0) * sx), clamp((rect[1] - x0) * sx), clamp((rect[2] - y0) * sy), clamp((rect[3] - y0) * sy)];
}

/**
 * The entries of a draw order (`faded` unselected first, then the selected) whose cell lies in
 * `range`, written to `out` in the same order: what a view needs drawn, on top where it was.
 * Returns the counts of both parts; `range` null: nothing.
 * @param {Uint32Array} order @param {Uint16Array} orderCells the cell of each entry of `order`
 * @param {number} faded @param {number} grid @param {[number, number, number, number] | null} range
 * @param {Uint32Array} out at least as long as `order`
 * @returns {{front: number, back: number}}
 */
export function cullOrder(order, orderCells, faded, grid, range, out) {
  if (!range) return { front: 0, back: 0 };
  const [cx0, cx1, cy0, cy1] = range;
  const inside = new Uint8Array(grid * grid);
  for (let cy = cy0; cy <= cy1; cy++) inside.fill(1, cy * grid + cx0, cy * grid + cx1 + 1);
  let count = 0;
  let front = 0;
  for (let k = 0; k < order.length; k++) {
    if (k === faded) front = count;
    if (inside[orderCells[k]]) out[count++] = order[k];
  }
  if (faded >= order.length) front = count;
  return { front, back: count - front };
}

/**
 * What one frame adds to a picture being refined: the unselected part (`front` of `fronts` drawn)
 * first, then the selected part, which must end on top, so once more unselected points go over
 * a partly drawn selected part it is drawn again from its start. At most `budget` points.
 * Returns the ranges to draw and the new state (`stale`: selected points drawn before, still shown).
 * @param {{front: number, back: number, stale: number}} state
 * @param {number} fronts @param {number} backs @param {number} budget
 */
export function refineStep(state, fronts, backs, budget) {
  let { front, back, stale } = state;
  const ranges = /** @type {{part: "front" | "back", from: number, to: number}[]} */ ([]);
  let left = Math.max(1, budget);
  if (front < fronts) {
    const to = Math.min(fronts, front + left);
    ranges.push({ part: "front", from: front, to });
    left -= to - front;
    front = to;
    if (back > 0) [stale, back] = [Math.max(stale, back), 0];
  }
  if (left > 0 && front >= fronts && back < backs) {
    const to = Math.min(backs, back + left);
    ranges.push({ part: "back", from: back, to });
    back = to;
    if (back >= stale) stale = 0;
  }
  return { ranges, state: { front, back, stale } };
}

/**
 * How long a still view waits before drawing every point, given the gap (ms) since the move
 * before: SETTLE_MS, longer when moves come further apart (a loaded page handles wheel events
 * late), so a full draw rarely starts between two moves of one gesture; gaps of more than
 * a second start a new gesture.
 * @param {number} gap
 */
export function settleDelay(gap) {
  if (!(gap >= 0) || gap > 1_000) return SETTLE_MS;
  return Math.min(MAX_SETTLE_MS, Math.max(SETTLE_MS, Math.round(1.5 * gap)));
}

/**
 * Bytes of a binary trait (ipywidgets delivers DataView) as a typed array of `Kind`.
 * @template {Float32ArrayConstructor | Uint8ArrayConstructor} K
 * @param {any} value
 * @param {K} Kind
 * @returns {InstanceType<K>}
 */
export function typedArray(value, Kind) {
  if (!value || value.byteLength === undefined) return /** @type {any} */ (new Kind(0));
  const offset = value.byteOffset || 0;
  const buffer = value.buffer || value;
  const length = Math.floor(value.byteLength / Kind.BYTES_PER_ELEMENT);
  if (offset % Kind.BYTES_PER_ELEMENT === 0) return /** @type {any} */ (new Kind(buffer, offset, length));
  return /** @type {any} */ (new Kind(buffer.slice(offset, offset + length * Kind.BYTES_PER_ELEMENT)));
}

// ---------------------------------------------------------------------------------------------
// WebGL points
// ---------------------------------------------------------------------------------------------

const VERTEX_SHADER = `
attribute float x;
attribute float y;
attribute float code;
attribute float selected;
uniform vec2 center;        // a float32 point near the view's middle, subtracted first
uniform vec4 toClip;        // clip = ((x - cx) * toClip.x + toClip.y, (y - cy) * toClip.z + toClip.w)
uniform float pointSize;
uniform float colorCount;
uniform float hasSelection;
uniform float fadedAlpha;
uniform sampler2D palette;
varying vec4 color;
void main() {
  gl_Position = vec4((x - center.x) * toClip.x + toClip.y, (y - center.y) * toClip.z + toClip.w, 0.0, 1.0);
  vec4 c = texture2D(palette, vec2((code + 0.5) / colorCount, 0.5));
  float alpha = (hasSelection > 0.5 && selected < 0.5) ? fadedAlpha : 1.0;
  gl_PointSize = (hasSelection > 0.5 && selected > 0.5) ? pointSize + 1.0 : pointSize;
  color = vec4(c.rgb * alpha, alpha);
}`;

const FRAGMENT_SHADER = `
precision mediump float;
varying vec4 color;
void main() {
  vec2 d = gl_PointCoord - 0.5;
  if (dot(d, d) > 0.25) discard;
  gl_FragColor = color;
}`;

/** @param {WebGLRenderingContext} gl @param {number} type @param {string} source */
function compile(gl, type, source) {
  const shader = /** @type {WebGLShader} */ (gl.createShader(type));
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
    throw new Error(`shader: ${gl.getShaderInfoLog(shader)}`);
  }
  return shader;
}

/** Numbers what a renderer holds: a picture drawn from other data or by another renderer is stale. */
let dataVersions = 0;

class PointsRenderer {
  /** @param {HTMLCanvasElement} canvas @param {WebGLRenderingContext} gl */
  constructor(canvas, gl) {
    this.canvas = canvas;
    this.gl = gl;
    this.count = 0;
    this.version = ++dataVersions;
    this.colorCount = 1;
    this.hasSelection = false;
    /** Selected points, drawn after the others (the last `selected` entries of the order). */
    this.selected = 0;
    // 32-bit indices: core in WebGL 2, an extension every WebGL 1 implementation in use has.
    this.indexed = (typeof WebGL2RenderingContext !== "undefined" && gl instanceof WebGL2RenderingContext)
      || Boolean(gl.getExtension("OES_element_index_uint"));
    /** @type {Uint32Array} */
    this.lod = new Uint32Array(0);
    /** @type {Uint8Array} */
    this.mask = new Uint8Array(0);
    /** The draw order in force, the grid cell of each of its entries, and the grid. */
    /** @type {Uint32Array} */
    this.order = new Uint32Array(0);
    this.orderCells = new Uint16Array(0);
    this.grid = gridCells(new Float32Array(0), new Float32Array(0));
    /** What the view draws: all of the order, or the part of it in the cells the view touches. */
    this.parts = { fronts: 0, backs: 0, culled: false };
    /** @type {Uint32Array} */
    this.culled = new Uint32Array(0);
    const program = /** @type {WebGLProgram} */ (gl.createProgram());
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) {
      throw new Error(`program: ${gl.getProgramInfoLog(program)}`);
    }
    this.program = program;
    /** @type {Record<string, WebGLBuffer>} */
    this.buffers = {};
    /** @type {Record<string, number>} */
    this.attributes = {};
    for (const name of ["x", "y", "code", "selected"]) {
      this.buffers[name] = /** @type {WebGLBuffer} */ (gl.createBuffer());
      this.attributes[name] = gl.getAttribLocation(program, name);
    }
    this.indexBuffer = gl.createBuffer();
    this.cullBuffer = gl.createBuffer();
    /** @type {Record<string, WebGLUniformLocation | null>} */
    this.uniforms = {};
    for (const name of ["center", "toClip", "pointSize", "colorCount", "hasSelection", "fadedAlpha", "palette"]) {
      this.uniforms[name] = gl.getUniformLocation(program, name);
    }
    this.texture = gl.createTexture();
    this.pixel = new Uint8Array(4);
  }

  /** @param {string} name @param {ArrayBufferView} values */
  upload(name, values) {
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers[name]);
    gl.bufferData(gl.ARRAY_BUFFER, values.byteLength ? values : new Uint8Array(4), gl.STATIC_DRAW);
  }

  /** @param {Float32Array} x @param {Float32Array} y */
  setPositions(x, y) {
    this.count = Math.min(x.length, y.length);
    this.upload("x", x);
    this.upload("y", y);
    const [xs, ys] = [x.subarray(0, this.count), y.subarray(0, this.count)];
    this.lod = this.indexed ? lodOrder(xs, ys) : new Uint32Array(0);
    this.grid = gridCells(this.indexed ? xs : new Float32Array(0), this.indexed ? ys : new Float32Array(0));
    this.culled = new Uint32Array(this.indexed ? this.count : 0);
    if (this.indexed) {
      const gl = this.gl;
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.cullBuffer);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, Math.max(4, this.count * 4), gl.DYNAMIC_DRAW);
    }
    this.uploadOrder();
  }

  /** @param {Uint8Array} codes */
  setCodes(codes) {
    this.upload("code", codes.length >= this.count ? codes : new Uint8Array(this.count));
    this.version = ++dataVersions;
  }

  /** @param {Uint8Array} mask one byte per point, empty for "no selection" */
  setSelection(mask) {
    this.hasSelection = mask.length > 0;
    this.mask = this.hasSelection && mask.length >= this.count ? mask : new Uint8Array(0);
    this.upload("selected", this.mask.length ? this.mask : new Uint8Array(this.count));
    this.uploadOrder();
  }

  uploadOrder() {
    this.version = ++dataVersions;
    if (!this.indexed) return;
    const { order, selected } = drawOrder(this.lod, this.mask);
    this.selected = selected;
    this.order = order;
    const cells = this.grid.cells;
    this.orderCells = new Uint16Array(order.length);
    for (let k = 0; k < order.length; k++) this.orderCells[k] = cells[order[k]];
    const gl = this.gl;
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.indexBuffer);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, order.byteLength ? order : new Uint32Array(1), gl.STATIC_DRAW);
  }

  /** @param {string[]} colors */
  setPalette(colors) {
    this.version = ++dataVersions;
    const gl = this.gl;
    const bytes = paletteBytes(colors);
    this.colorCount = bytes.length / 4;
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, this.colorCount, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, bytes);
    for (const [key, value] of [
      [gl.TEXTURE_MIN_FILTER, gl.NEAREST], [gl.TEXTURE_MAG_FILTER, gl.NEAREST],
      [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE],
    ]) gl.texParameteri(gl.TEXTURE_2D, key, value);
  }

  /** Clear the picture. */
  clear() {
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
  }

  /**
   * Set the view's transform and point size for the draws that follow.
   * @param {{a: number, b: number}} xMap data -> CSS pixels of the canvas @param {{a: number, b: number}} yMap
   * @param {[number, number]} center float32 point near the view's middle
   * @param {number} width CSS pixels @param {number} height @param {number} pointSize CSS pixels
   * @param {number} ratio device pixels per CSS pixel
   */
  prepare(xMap, yMap, center, width, height, pointSize, ratio) {
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.useProgram(this.program);
    const { scale, offset } = clipTransform(xMap, yMap, width, height, center);
    gl.uniform2f(this.uniforms.center, center[0], center[1]);
    gl.uniform4f(this.uniforms.toClip, scale[0], offset[0], scale[1], offset[1]);
    gl.uniform1f(this.uniforms.pointSize, pointSize * ratio);
    gl.uniform1f(this.uniforms.colorCount, this.colorCount);
    gl.uniform1f(this.uniforms.hasSelection, this.hasSelection ? 1 : 0);
    gl.uniform1f(this.uniforms.fadedAlpha, 0.12);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.uniform1i(this.uniforms.palette, 0);
    for (const [name, size, type] of /** @type {[string, number, number][]} */ ([
      ["x", 1, gl.FLOAT], ["y", 1, gl.FLOAT], ["code", 1, gl.UNSIGNED_BYTE], ["selected", 1, gl.UNSIGNED_BYTE],
    ])) {
      const location = this.attributes[name];
      if (location < 0) continue;
      gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers[name]);
      gl.enableVertexAttribArray(location);
      gl.vertexAttribPointer(location, size, type, false, 0, 0);
    }
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    if (this.indexed) gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.parts.culled ? this.cullBuffer : this.indexBuffer);
  }

  /**
   * Choose what a view of the plot area draws: the draw order's entries in the grid cells that
   * the view, widened by a point's size, touches (every point it can show, in the same order),
   * or the whole order when the view holds every cell. Sets `parts` and returns it.
   * @param {{a: number, b: number}} xMap @param {{a: number, b: number}} yMap
   * @param {number} width CSS pixels @param {number} height @param {number} pointSize CSS pixels
   */
  cull(xMap, yMap, width, height, pointSize) {
    const faded = this.count - this.selected;
    this.parts = { fronts: faded, backs: this.selected, culled: false };
    if (!this.indexed || !xMap.a || !yMap.a || this.count === 0) return this.parts;
    const pad = pointSize / 2 + 2;
    const xs = [pixelToData(xMap, -pad), pixelToData(xMap, width + pad)].sort((a, b) => a - b);
    const ys = [pixelToData(yMap, -pad), pixelToData(yMap, height + pad)].sort((a, b) => a - b);
    const { bounds, grid } = this.grid;
    const range = cellRange(bounds, grid, [xs[0], xs[1], ys[0], ys[1]]);
    if (range && range[0] === 0 && range[2] === 0 && range[1] === grid - 1 && range[3] === grid - 1) return this.parts;
    const { front, back } = cullOrder(this.order, this.orderCells, faded, grid, range, this.culled);
    this.parts = { fronts: front, backs: back, culled: true };
    const gl = this.gl;
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.cullBuffer);
    if (front + back) gl.bufferSubData(gl.ELEMENT_ARRAY_BUFFER, 0, this.culled.subarray(0, front + back));
    return this.parts;
  }

  /**
   * Draw entries `from` to `to` of one part of `parts`: "front" the unselected, "back" the
   * selected (drawn over them). Returns the points drawn.
   * @param {"front" | "back"} part @param {number} from @param {number} to
   */
  drawRange(part, from, to) {
    const gl = this.gl;
    const count = Math.max(0, to - from);
    if (!count) return 0;
    const first = part === "front" ? from : this.parts.fronts + from;
    if (this.indexed) gl.drawElements(gl.POINTS, count, gl.UNSIGNED_INT, first * 4);
    else gl.drawArrays(gl.POINTS, first, count);
    return count;
  }

  /**
   * Wait until what was drawn is in the drawing buffer: reading one pixel back gives a frame's
   * real cost, and a renderer that never queues frames behind the one on screen.
   */
  finish() {
    const gl = this.gl;
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, this.pixel);
  }
}

// ---------------------------------------------------------------------------------------------
// Finding the bqplot figure this layer draws into
// ---------------------------------------------------------------------------------------------

/**
 * Resolve after `ms` milliseconds, or reject once `signal` is aborted.
 * @param {number} ms @param {AbortSignal} signal
 */
function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) reject(new Error("aborted"));
    else setTimeout(resolve, ms);
  });
}

/** The parts of bqplot's FigureView this layer uses. */
export const FIGURE_PARTS = ["padded_range", "webGLCanvas", "svg", "margin", "plotareaWidth", "plotareaHeight"];

/** @param {any} model @param {string} name */
async function referencedModel(model, name) {
  const ref = String(model.get(name) || "");
  return model.widget_manager.get_model(ref.replace(/^IPY_MODEL_/, ""));
}

/** Whether `node` takes space on the page (not in a collapsed output or a hidden tab). @param {Element | null} node */
function shown(node) {
  return Boolean(node && node.isConnected && node.getClientRects().length > 0);
}

/**
 * The figure view shown in the same explorer as `el` (or the only one shown), once bqplot has
 * laid it out with every part this layer needs. A map that is not shown (a collapsed output, a
 * background tab) waits as long as it takes; a shown one waits at most `deadline` ms of being
 * shown, then rejects saying what is missing (an unsupported bqplot), never a silent blank map.
 * @param {any} figureModel @param {HTMLElement} el @param {AbortSignal} signal @param {number} [deadline]
 */
async function findFigureView(figureModel, el, signal, deadline = FIGURE_DEADLINE_MS) {
  let waited = 0;
  let last = performance.now();
  for (let attempt = 0; ; attempt++) {
    const home = el.closest(".imrec-umap-explorer") || el.parentElement;
    const views = await Promise.all(
      Object.values(figureModel.views || {}).map((view) => Promise.resolve(view).catch(() => null)),
    );
    const onPage = views.filter((view) => view && view.el && view.el.isConnected);
    const mine = onPage.find((view) => home && home.contains(view.el)) || (onPage.length === 1 ? onPage[0] : null);
    const missing = mine ? FIGURE_PARTS.filter((name) => mine[name] === undefined) : FIGURE_PARTS;
    if (mine && !missing.length && mine.plotareaWidth > 0 && mine.plotareaHeight > 0) return mine;
    const now = performance.now();
    if (shown(home)) waited += now - last;
    last = now;
    if (waited > deadline) {
      throw new UnsupportedFigure(
        mine ? `bqplot's figure lacks ${missing.join(", ") || "a plot area"}` : "bqplot never showed the figure",
      );
    }
    await pause(attempt < 60 ? 16 : 250, signal);
  }
}

class UnsupportedFigure extends Error {}

// ---------------------------------------------------------------------------------------------
// The layer
// ---------------------------------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";

/** @param {string} tag @param {string} className */
function svgNode(tag, className) {
  const node = document.createElementNS(SVG_NS, tag);
  node.setAttribute("class", className);
  return node;
}

class MapLayer {
  /** @param {any} model @param {HTMLElement} el @param {AbortSignal} signal */
  constructor(model, el, signal) {
    this.model = model;
    this.el = el;
    this.signal = signal;
    /** @type {PointsRenderer | null} */
    this.renderer = null;
    this.frames = 0;
    this.frameRequested = false;
    /** The device pixel ratio the canvas was sized for. */
    this.canvasRatio = 0;
    /** Whether the view is moving (frames draw a subsample), and the timer that ends it. */
    this.moving = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.settleTimer = undefined;
    /** When the view last moved (performance.now()). */
    this.movedAt = -Infinity;
    /** Measured cost of drawing one point (ms), 0 until a frame has been drawn. */
    this.msPerPoint = 0;
    /** What the canvas shows: the view and data it was drawn for, and how much of each part. */
    this.pictureKey = "";
    this.picture = { front: 0, back: 0, stale: 0 };
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.restoreTimer = undefined;
    /** Whether a lost WebGL context sent the map to the SVG fallback. */
    this.fellBack = false;
    /** @type {HTMLElement | null} */
    this.note = null;
    /** @type {null | {kind: string, path: number[][], add: boolean, pointerId: number}} */
    this.gesture = null;
    this.lastHoverSent = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.hoverTimer = undefined;
    /** @type {number[] | null} */
    this.pointer = null;
    /** @type {string | null} */
    this.thumbUrl = null;
    /** @type {number[] | null} */
    this.hovered = null;
    /** @type {(() => void)[]} */
    this.cleanups = [];
    /** @type {any} bqplot's FigureView */
    this.view = null;
    /** @type {any} */
    this.xScale = null;
    /** @type {any} */
    this.yScale = null;
    /** @type {HTMLCanvasElement | null} */
    this.canvas = null;
    /** @type {HTMLElement | null} */
    this.overlay = null;
    /** @type {HTMLElement | null} */
    this.tooltip = null;
    /** @type {HTMLImageElement | null} */
    this.tooltipImage = null;
    /** @type {HTMLElement | null} */
    this.tooltipName = null;
    /** @type {SVGElement | null} */
    this.svg = null;
    /** @type {SVGElement | null} */
    this.shapes = null;
    /** @type {SVGElement | null} */
    this.live = null;
    /** @type {SVGElement | null} */
    this.hoverRing = null;
    /** @type {Float32Array | null} */
    this.x = null;
    /** @type {Float32Array | null} */
    this.y = null;
  }

  async start() {
    const [figureModel, xScale, yScale] = await Promise.all(
      ["figure", "x_scale", "y_scale"].map((name) => referencedModel(this.model, name)),
    );
    this.xScale = xScale;
    this.yScale = yScale;
    let view;
    try {
      view = await findFigureView(figureModel, this.el, this.signal);
    } catch (error) {
      if (!(error instanceof UnsupportedFigure)) throw error;
      this.report("unsupported", error.message);
      return;
    }
    this.view = view;
    this.build();
    this.listen();
    this.loadData();
    this.layout();
  }

  /** @param {string} event @param {string} [message] */
  report(event, message = "") {
    this.model.send({ event, message });
  }

  /** @param {string} text shown over the map; "" hides it */
  say(text) {
    if (!this.note) return;
    this.note.textContent = text;
    this.note.style.display = text ? "" : "none";
  }

  /** @param {WebGLRenderingContext | null} gl */
  onContextLost(gl) {
    if (!this.renderer || !gl || this.fellBack) return;
    this.renderer = null;
    /** @type {HTMLCanvasElement} */ (this.canvas).dataset.webgl = "lost";
    this.say("The browser took the map's WebGL context away; waiting for it to come back…");
    clearTimeout(this.restoreTimer);
    this.restoreTimer = setTimeout(() => {
      if (this.renderer || this.signal.aborted) return;
      this.fellBack = true;
      this.say("");
      this.report("webgl", "the browser took the map's WebGL context away (too many WebGL views on the page?)");
    }, CONTEXT_RESTORE_MS);
  }

  /** @param {WebGLRenderingContext | null} gl */
  onContextRestored(gl) {
    if (!gl || this.fellBack || this.signal.aborted) return;
    clearTimeout(this.restoreTimer);
    try {
      this.renderer = new PointsRenderer(/** @type {HTMLCanvasElement} */ (this.canvas), gl);
    } catch (error) {
      this.fellBack = true;
      this.say("");
      this.report("webgl", `WebGL failed after the context came back: ${error}`);
      return;
    }
    /** @type {HTMLCanvasElement} */ (this.canvas).dataset.webgl = "1";
    this.say("");
    this.msPerPoint = 0;
    this.pictureKey = "";
    this.loadData();
  }

  /** Follow the device pixel ratio (a window moved to another screen, the browser zoomed). */
  watchPixelRatio() {
    const query = window.matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
    const onChange = () => {
      query.removeEventListener("change", onChange);
      if (this.signal.aborted) return;
      this.layout();
      this.watchPixelRatio();
    };
    query.addEventListener("change", onChange);
    this.cleanups.push(() => query.removeEventListener("change", onChange));
  }

  build() {
    const view = this.view;
    const canvas = document.createElement("canvas");
    canvas.className = "imrec-map-points";
    const gl = /** @type {WebGLRenderingContext | null} */ (canvas.getContext("webgl", {
      // Kept between frames: a still view's picture is completed over several frames.
      antialias: false, alpha: true, premultipliedAlpha: true, preserveDrawingBuffer: true,
    }));
    if (gl) {
      try {
        this.renderer = new PointsRenderer(canvas, gl);
      } catch (error) {
        this.renderer = null;
        this.report("webgl", `WebGL failed: ${error}`);
      }
    } else {
      this.report("webgl", "this browser gives no WebGL context");
    }
    canvas.dataset.webgl = this.renderer ? "1" : "0";
    canvas.dataset.frame = "0";
    // Under bqplot's SVG marks (result rings), above its background.
    view.el.insertBefore(canvas, view.svg.node());
    this.canvas = canvas;
    if (this.renderer) this.report("ready");
    // Browsers cap WebGL contexts per page and take the oldest back: wait for it to be restored
    // (the default would be never), and fall back to the SVG map, saying so, if it is not.
    const onLost = (/** @type {Event} */ event) => {
      event.preventDefault();
      this.onContextLost(gl);
    };
    const onRestored = () => this.onContextRestored(gl);
    canvas.addEventListener("webglcontextlost", onLost);
    canvas.addEventListener("webglcontextrestored", onRestored);
    this.cleanups.push(() => {
      canvas.removeEventListener("webglcontextlost", onLost);
      canvas.removeEventListener("webglcontextrestored", onRestored);
      clearTimeout(this.restoreTimer);
    });
    const note = document.createElement("div");
    note.className = "imrec-map-note";
    note.style.display = "none";
    this.note = note;

    const overlay = document.createElement("div");
    overlay.className = "imrec-map-overlay";
    const svg = svgNode("svg", "imrec-map-shapes");
    this.shapes = svgNode("g", "imrec-map-outlines");
    this.live = svgNode("path", "imrec-map-live");
    this.hoverRing = svgNode("circle", "imrec-map-hover-ring");
    this.hoverRing.setAttribute("r", "7");
    this.hoverRing.style.display = "none";
    svg.append(this.shapes, this.live, this.hoverRing);
    overlay.append(svg);
    this.svg = svg;
    this.overlay = overlay;

    const tooltip = document.createElement("div");
    tooltip.className = "imrec-map-tooltip";
    tooltip.style.display = "none";
    this.tooltipImage = document.createElement("img");
    this.tooltipName = document.createElement("div");
    this.tooltipName.className = "imrec-map-tooltip-name";
    tooltip.append(this.tooltipImage, this.tooltipName);
    this.tooltip = tooltip;
    view.el.append(overlay, tooltip, note);
    this.cleanups.push(() => {
      canvas.remove();
      overlay.remove();
      tooltip.remove();
      note.remove();
      if (this.thumbUrl) URL.revokeObjectURL(this.thumbUrl);
    });
  }

  listen() {
    const model = this.model;
    const on = (/** @type {any} */ target, /** @type {string} */ name, /** @type {any} */ callback) => {
      target.on(name, callback, this);
      this.cleanups.push(() => target.off(name, callback, this));
    };
    on(model, "change:x change:y change:codes change:palette", () => this.loadData());
    on(model, "change:mask", () => this.loadSelection());
    on(model, "change:point_size", () => this.requestFrame());
    on(model, "change:tool", () => this.applyTool());
    on(model, "msg:custom", (/** @type {any} */ msg, /** @type {any[]} */ buffers) => this.onMessage(msg, buffers));
    on(this.xScale, "change:min change:max", () => this.onDomainChanged());
    on(this.yScale, "change:min change:max", () => this.onDomainChanged());
    on(this.view, "margin_updated", () => this.layout());
    const resize = new ResizeObserver(() => this.layout());
    resize.observe(this.view.el);
    this.cleanups.push(() => resize.disconnect());
    this.watchPixelRatio();

    const overlay = /** @type {HTMLElement} */ (this.overlay);
    const listen = (/** @type {EventTarget} */ target, /** @type {string} */ type, /** @type {any} */ handler) => {
      target.addEventListener(type, handler);
      this.cleanups.push(() => target.removeEventListener(type, handler));
    };
    listen(overlay, "pointerdown", (/** @type {PointerEvent} */ e) => this.onDown(e));
    listen(overlay, "pointermove", (/** @type {PointerEvent} */ e) => this.onMove(e));
    listen(overlay, "pointerup", (/** @type {PointerEvent} */ e) => this.onUp(e));
    listen(overlay, "pointercancel", () => this.cancelGesture());
    listen(overlay, "lostpointercapture", () => this.cancelGesture());
    listen(window, "keydown", (/** @type {KeyboardEvent} */ e) => {
      if (e.key === "Escape" && this.gesture) this.cancelGesture();
    });
    // Hover works under every tool: with pan/zoom the events reach bqplot first, then bubble here.
    listen(this.view.el, "mousemove", (/** @type {MouseEvent} */ e) => this.onHover(e));
    listen(this.view.el, "mouseleave", () => this.hideTooltip());
    // The wheel zooms under every tool: one update of both scales, drawn in the same frame.
    listen(this.view.el, "wheel", (/** @type {WheelEvent} */ e) => this.onWheel(e));
    this.applyTool();
  }

  loadData() {
    const model = this.model;
    const x = typedArray(model.get("x"), Float32Array);
    const y = typedArray(model.get("y"), Float32Array);
    this.x = x;
    this.y = y;
    if (this.renderer) {
      this.renderer.setPositions(x, y);
      this.renderer.setCodes(typedArray(model.get("codes"), Uint8Array));
      this.renderer.setSelection(typedArray(model.get("mask"), Uint8Array));
      this.renderer.setPalette(model.get("palette") || []);
    }
    this.requestFrame();
  }

  /** A new selection changes the draw order and the look, not the points. */
  loadSelection() {
    this.renderer?.setSelection(typedArray(this.model.get("mask"), Uint8Array));
    this.requestFrame();
  }

  layout() {
    const view = this.view;
    if (!view || !this.canvas) return;
    const width = view.plotareaWidth;
    const height = view.plotareaHeight;
    const left = view.margin.left;
    const top = view.margin.top;
    const ratio = window.devicePixelRatio || 1;
    for (const node of [this.canvas, this.overlay]) {
      Object.assign(/** @type {HTMLElement} */ (node).style, {
        left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px`,
      });
    }
    // Setting a canvas' size clears it, even to the size it has: only when it changes.
    const [pixelsWide, pixelsHigh] = [Math.max(1, Math.round(width * ratio)), Math.max(1, Math.round(height * ratio))];
    if (this.canvas.width !== pixelsWide || this.canvas.height !== pixelsHigh) {
      this.canvas.width = pixelsWide;
      this.canvas.height = pixelsHigh;
      this.pictureKey = "";
    }
    this.canvasRatio = ratio;
    this.svg?.setAttribute("width", String(width));
    this.svg?.setAttribute("height", String(height));
    this.viewMoved();
  }

  /** Data -> plot-area pixel maps, the same as bqplot's marks use. */
  maps() {
    const view = this.view;
    const xRange = view.padded_range("x", this.xScale);
    const yRange = view.padded_range("y", this.yScale);
    return {
      x: axisMap([this.xScale.get("min"), this.xScale.get("max")], xRange),
      y: axisMap([this.yScale.get("min"), this.yScale.get("max")], yRange),
    };
  }

  /** @param {WheelEvent} event */
  onWheel(event) {
    this.hideTooltip();
    const [px, py] = this.local(event);
    const view = this.view;
    if (px < 0 || py < 0 || px > view.plotareaWidth || py > view.plotareaHeight || !event.deltaY) return;
    event.preventDefault();
    event.stopPropagation();
    const unit = event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? view.plotareaHeight : 1;
    const factor = Math.exp(event.deltaY * unit * WHEEL_ZOOM_RATE);
    const [x, y] = this.toData([px, py]);
    const domains = [[this.xScale, x], [this.yScale, y]].map(([scale, at]) =>
      zoomDomain([scale.get("min"), scale.get("max")], at, factor));
    // Past float64's resolution the view would collapse: stop zooming in there.
    const tooDeep = domains.some(([min, max]) =>
      max - min < MIN_RELATIVE_SPAN * Math.max(Math.abs(min), Math.abs(max), 1e-300));
    if (factor < 1 && tooDeep) return;
    domains.forEach(([min, max], axis) => {
      const scale = axis ? this.yScale : this.xScale;
      scale.set({ min, max });
      scale.save_changes();
    });
  }

  onDomainChanged() {
    this.viewMoved();
    this.hideTooltip();
  }

  /**
   * The view moves (wheel, pan, resize): each frame draws an even subsample of the points in view
   * sized to the frame budget; once the view has been still for SETTLE_MS, a frame adds the rest
   * over that picture in the order one full draw uses (the same picture, the subsample not drawn
   * twice). Selections never depend on it.
   */
  viewMoved() {
    this.moving = true;
    clearTimeout(this.settleTimer);
    const now = performance.now();
    const settle = settleDelay(now - this.movedAt);
    this.movedAt = now;
    this.settleTimer = setTimeout(() => {
      this.moving = false;
      this.requestFrame();
    }, settle);
    this.requestFrame();
  }

  requestFrame() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      if (this.signal.aborted) return;
      this.drawFrame();
    });
  }

  drawFrame() {
    const canvas = /** @type {HTMLCanvasElement} */ (this.canvas);
    const view = this.view;
    const { x, y } = this.maps();
    const total = this.renderer ? this.renderer.count : 0;
    const size = this.model.get("point_size") || defaultPointSize(this.x ? this.x.length : 0);
    const ratio = window.devicePixelRatio || 1;
    if (ratio !== this.canvasRatio) this.layout(); // a change no event told us of
    const [width, height] = [view.plotareaWidth, view.plotareaHeight];
    let complete = true;
    let shown = 0;
    let inView = 0;
    const renderer = this.renderer;
    if (renderer) {
      const key = [x.a, x.b, y.a, y.b, size, ratio, width, height, canvas.width, canvas.height, renderer.version].join();
      const center = /** @type {[number, number]} */ ([
        viewCenter([this.xScale.get("min"), this.xScale.get("max")]),
        viewCenter([this.yScale.get("min"), this.yScale.get("max")]),
      ]);
      const started = performance.now();
      let added = 0;
      if (key !== this.pictureKey) {
        // A new view or new data: a new picture, a subsample while moving, else every point.
        this.pictureKey = key;
        renderer.clear();
        if (!(width > 0 && height > 0)) renderer.parts = { fronts: 0, backs: 0, culled: false };
        const { fronts, backs } = width > 0 && height > 0 ? renderer.cull(x, y, width, height, size) : renderer.parts;
        const points = fronts + backs;
        const limit = this.moving ? movingCount(points, this.msPerPoint) : points;
        const share = points ? Math.min(1, limit / points) : 1;
        this.picture = share < 1
          ? { front: Math.ceil(fronts * share), back: Math.ceil(backs * share), stale: 0 }
          : { front: fronts, back: backs, stale: 0 };
        if (this.picture.front + this.picture.back) {
          renderer.prepare(x, y, center, width, height, size, ratio);
          added += renderer.drawRange("front", 0, this.picture.front);
          added += renderer.drawRange("back", 0, this.picture.back);
        }
      } else if (!this.moving) {
        // The same view, still: add the rest over the picture, in one frame (each frame costs
        // far more than its points on a loaded machine: adding them in steps took 3-5x longer).
        const { fronts, backs } = renderer.parts;
        if (this.picture.front < fronts || this.picture.back < backs) {
          const { ranges, state } = refineStep(this.picture, fronts, backs, fronts + backs);
          renderer.prepare(x, y, center, width, height, size, ratio);
          for (const { part, from, to } of ranges) added += renderer.drawRange(part, from, to);
          this.picture = state;
        }
      }
      if (added) {
        renderer.finish();
        const cost = performance.now() - started;
        // Cost per point, smoothed over frames; frames of few points say little about it.
        if (added >= Math.min(total, MIN_MOVING_POINTS)) {
          const sample = cost / added;
          this.msPerPoint = this.msPerPoint ? 0.5 * this.msPerPoint + 0.5 * sample : sample;
        }
        canvas.dataset.frameMs = cost.toFixed(1);
      }
      const { fronts, backs } = renderer.parts;
      const { front, back, stale } = this.picture;
      inView = fronts + backs;
      shown = front + Math.max(back, stale);
      complete = front >= fronts && back >= backs;
      if (!complete && !this.moving) this.requestFrame();
    }
    this.redrawOutlines();
    this.frames += 1;
    // The data -> pixel maps in force, for tests and benchmarks that aim the pointer at points;
    // drawn: points in the picture; inView: the points the view can show (those of the grid
    // cells it touches), all drawn when detail is "full"; drawnAt: when this frame's points were
    // in the drawing buffer (ms since the epoch).
    canvas.dataset.xMap = `${x.a},${x.b}`;
    canvas.dataset.yMap = `${y.a},${y.b}`;
    canvas.dataset.points = String(total);
    canvas.dataset.drawn = String(shown);
    canvas.dataset.inView = String(inView);
    canvas.dataset.detail = complete ? "full" : "subsample";
    canvas.dataset.ratio = String(ratio);
    canvas.dataset.drawnAt = String(Date.now());
    canvas.dataset.frame = String(this.frames);
  }

  applyTool() {
    const tool = this.model.get("tool");
    const overlay = /** @type {HTMLElement} */ (this.overlay);
    overlay.dataset.tool = tool;
    overlay.style.pointerEvents = GESTURE_TOOLS.includes(tool) ? "auto" : "none";
    if (this.gesture) this.cancelGesture();
  }

  // -- gestures ----------------------------------------------------------------------------------

  /** @param {MouseEvent} event */
  local(event) {
    const box = /** @type {HTMLElement} */ (this.overlay).getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  /**
   * Map coordinates -> plot-area pixels (`maps` when a caller converts many points).
   * @param {number[]} point @param {{x: {a: number, b: number}, y: {a: number, b: number}}} [maps]
   */
  toPixel(point, maps = this.maps()) {
    const { x, y } = maps;
    return [x.a * point[0] + x.b, y.a * point[1] + y.b];
  }

  /** @param {number[]} pixel */
  toData(pixel) {
    const { x, y } = this.maps();
    return [pixelToData(x, pixel[0]), pixelToData(y, pixel[1])];
  }

  /** @param {PointerEvent} event */
  onDown(event) {
    if (event.button !== 0) return;
    const tool = this.model.get("tool");
    if (!GESTURE_TOOLS.includes(tool)) return;
    event.preventDefault();
    /** @type {HTMLElement} */ (this.overlay).setPointerCapture(event.pointerId);
    this.gesture = { kind: tool, path: [this.local(event)], add: event.shiftKey, pointerId: event.pointerId };
    if (!event.shiftKey && tool !== "click") this.shapes?.replaceChildren();
    this.hideTooltip();
    this.drawLive();
  }

  /** @param {PointerEvent} event */
  onMove(event) {
    const gesture = this.gesture;
    if (!gesture || event.pointerId !== gesture.pointerId) return;
    const point = this.local(event);
    if (gesture.kind === "lasso") {
      if (extendPath(gesture.path, point)) this.drawLive();
    } else {
      gesture.path[1] = point;
      this.drawLive();
    }
  }

  /** @param {PointerEvent} event */
  onUp(event) {
    const gesture = this.gesture;
    if (!gesture || event.pointerId !== gesture.pointerId) return;
    this.gesture = null;
    if (gesture.kind === "lasso") extendPath(gesture.path, this.local(event));
    else gesture.path[1] = this.local(event);
    const { path, add } = gesture;
    this.live?.setAttribute("d", "");
    if (pathExtent(path) < CLICK_SLOP_PX) {
      const [x, y] = this.toData(path[0]);
      this.model.send({ event: "click", tool: gesture.kind, x, y, add, ...this.pixelSize() });
      return;
    }
    if (gesture.kind === "lasso") {
      this.keepOutline("lasso", path);
      this.model.send({ event: "lasso", polygon: path.map((p) => this.toData(p)), add });
    } else if (gesture.kind === "brush") {
      this.keepOutline("brush", path);
      const [a, b] = [this.toData(path[0]), this.toData(path[1])];
      this.model.send({ event: "brush", x: [a[0], b[0]], y: [a[1], b[1]], add });
    }
  }

  cancelGesture() {
    if (!this.gesture) return;
    this.gesture = null;
    this.live?.setAttribute("d", "");
  }

  /** Data units per pixel along x and y (what a few pixels of pointer slack mean in the map). */
  pixelSize() {
    const { x, y } = this.maps();
    return { dx: x.a ? 1 / Math.abs(x.a) : 0, dy: y.a ? 1 / Math.abs(y.a) : 0 };
  }

  /** @param {string} kind @param {number[][]} path */
  pathData(kind, path) {
    if (kind === "brush" && path.length >= 2) {
      const [[x0, y0], [x1, y1]] = path;
      return `M${x0},${y0}H${x1}V${y1}H${x0}Z`;
    }
    return path.length ? `M${path.map((p) => p.join(",")).join("L")}Z` : "";
  }

  drawLive() {
    const gesture = this.gesture;
    if (gesture && gesture.kind !== "click") this.live?.setAttribute("d", this.pathData(gesture.kind, gesture.path));
  }

  /** Keep a finished gesture's outline (in map coordinates, so it follows pan and zoom). */
  keepOutline(/** @type {string} */ kind, /** @type {number[][]} */ path) {
    const node = svgNode("path", `imrec-map-outline imrec-map-outline-${kind}`);
    node.dataset.kind = kind;
    node.dataset.points = JSON.stringify(path.map((p) => this.toData(p)));
    this.shapes?.append(node);
    this.redrawOutlines();
  }

  redrawOutlines() {
    if (!this.shapes) return;
    const maps = this.maps();
    for (const node of Array.from(this.shapes.children)) {
      const points = JSON.parse(/** @type {any} */ (node).dataset.points || "[]");
      const pixels = points.map((/** @type {number[]} */ p) => this.toPixel(p, maps));
      node.setAttribute("d", this.pathData(/** @type {any} */ (node).dataset.kind, pixels));
    }
    this.placeHoverRing();
  }

  // -- hover -------------------------------------------------------------------------------------

  /** @param {MouseEvent} event */
  onHover(event) {
    if (this.gesture || !this.overlay) return;
    const [px, py] = this.local(event);
    const view = this.view;
    if (px < 0 || py < 0 || px > view.plotareaWidth || py > view.plotareaHeight) {
      this.hideTooltip();
      return;
    }
    this.pointer = [px, py];
    const wait = this.lastHoverSent + HOVER_INTERVAL_MS - performance.now();
    clearTimeout(this.hoverTimer);
    this.hoverTimer = setTimeout(() => this.sendHover(), Math.max(0, wait));
  }

  sendHover() {
    if (!this.pointer || this.gesture) return;
    this.lastHoverSent = performance.now();
    const [x, y] = this.toData(this.pointer);
    this.model.send({ event: "hover", x, y, radius: HOVER_RADIUS_PX, ...this.pixelSize() });
  }

  hideTooltip() {
    clearTimeout(this.hoverTimer);
    this.pointer = null;
    this.hovered = null;
    if (this.tooltip) this.tooltip.style.display = "none";
    if (this.hoverRing) this.hoverRing.style.display = "none";
  }

  /** @param {any} msg @param {any[]} buffers */
  onMessage(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    if (msg.event === "clear") {
      this.shapes?.replaceChildren();
      this.cancelGesture();
    } else if (msg.event === "hover") {
      this.showTooltip(msg, buffers);
    }
  }

  /** @param {any} msg @param {any[]} buffers */
  showTooltip(msg, buffers) {
    const tooltip = /** @type {HTMLElement} */ (this.tooltip);
    if (msg.id === null || msg.id === undefined || !this.pointer) {
      this.hideTooltip();
      return;
    }
    if (this.thumbUrl) URL.revokeObjectURL(this.thumbUrl);
    this.thumbUrl = null;
    const image = /** @type {HTMLImageElement} */ (this.tooltipImage);
    if (buffers && buffers.length && buffers[0].byteLength) {
      this.thumbUrl = URL.createObjectURL(new Blob([typedArray(buffers[0], Uint8Array)], { type: "image/jpeg" }));
      image.src = this.thumbUrl;
      image.style.display = "";
    } else {
      image.style.display = "none";
    }
    /** @type {HTMLElement} */ (this.tooltipName).textContent = String(msg.name || "");
    tooltip.dataset.id = String(msg.id);
    tooltip.style.display = "";
    this.hovered = [Number(msg.x), Number(msg.y)];
    // Next to the point, inside the figure.
    const view = this.view;
    const [px, py] = this.toPixel(this.hovered);
    const at = [px + view.margin.left, py + view.margin.top];
    const bounds = [view.el.clientWidth, view.el.clientHeight];
    const [left, top] = tooltipPosition(at, [tooltip.offsetWidth, tooltip.offsetHeight], bounds);
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${top}px`;
    this.placeHoverRing();
  }

  placeHoverRing() {
    const ring = this.hoverRing;
    if (!ring) return;
    if (!this.hovered) {
      ring.style.display = "none";
      return;
    }
    const [cx, cy] = this.toPixel(this.hovered);
    ring.setAttribute("cx", String(cx));
    ring.setAttribute("cy", String(cy));
    ring.style.display = "";
  }

  destroy() {
    clearTimeout(this.settleTimer);
    for (const cleanup of this.cleanups.splice(0)) cleanup();
  }
}

/** @param {{model: any, el: HTMLElement}} context */
function render({ model, el }) {
  el.classList.add("imrec-map-layer");
  const controller = new AbortController();
  const layer = new MapLayer(model, el, controller.signal);
  layer.start().catch((error) => {
    if (!controller.signal.aborted) model.send({ event: "error", message: String(error && error.message || error) });
  });
  return () => {
    controller.abort();
    layer.destroy();
  };
}

export default { render };
