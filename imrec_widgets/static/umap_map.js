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
uniform vec4 toClip;        // clip = (a_x * x + b_x, a_y * y + b_y)
uniform float pointSize;
uniform float colorCount;
uniform float hasSelection;
uniform float fadedAlpha;
uniform sampler2D palette;
varying vec4 color;
void main() {
  gl_Position = vec4(toClip.x * x + toClip.y, toClip.z * y + toClip.w, 0.0, 1.0);
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

class PointsRenderer {
  /** @param {HTMLCanvasElement} canvas @param {WebGLRenderingContext} gl */
  constructor(canvas, gl) {
    this.canvas = canvas;
    this.gl = gl;
    this.count = 0;
    this.colorCount = 1;
    this.hasSelection = false;
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
    /** @type {Record<string, WebGLUniformLocation | null>} */
    this.uniforms = {};
    for (const name of ["toClip", "pointSize", "colorCount", "hasSelection", "fadedAlpha", "palette"]) {
      this.uniforms[name] = gl.getUniformLocation(program, name);
    }
    this.texture = gl.createTexture();
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
  }

  /** @param {Uint8Array} codes */
  setCodes(codes) {
    this.upload("code", codes.length >= this.count ? codes : new Uint8Array(this.count));
  }

  /** @param {Uint8Array} mask one byte per point, empty for "no selection" */
  setSelection(mask) {
    this.hasSelection = mask.length > 0;
    this.upload("selected", this.hasSelection && mask.length >= this.count ? mask : new Uint8Array(this.count));
  }

  /** @param {string[]} colors */
  setPalette(colors) {
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

  /**
   * Draw every point. `xMap`/`yMap` take data to CSS pixels of the canvas.
   * @param {{a: number, b: number}} xMap @param {{a: number, b: number}} yMap
   * @param {number} width CSS pixels @param {number} height @param {number} pointSize CSS pixels
   * @param {number} ratio device pixels per CSS pixel
   */
  draw(xMap, yMap, width, height, pointSize, ratio) {
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (this.count === 0 || width <= 0 || height <= 0) return;
    gl.useProgram(this.program);
    // CSS pixels -> clip space: x_clip = 2 px / width - 1, y_clip = 1 - 2 py / height.
    gl.uniform4f(
      this.uniforms.toClip,
      (2 * xMap.a) / width, (2 * xMap.b) / width - 1,
      (-2 * yMap.a) / height, 1 - (2 * yMap.b) / height,
    );
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
    gl.drawArrays(gl.POINTS, 0, this.count);
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

/**
 * Poll `probe` until it returns something: every frame at first, then every 250 ms (a map in a
 * collapsed output or a background tab waits, without a deadline, until it is shown).
 * @template T
 * @param {() => T | undefined | null | Promise<T | undefined | null>} probe
 * @param {AbortSignal} signal
 * @returns {Promise<T>}
 */
async function waitFor(probe, signal) {
  for (let attempt = 0; ; attempt++) {
    const value = await probe();
    if (value) return value;
    await pause(attempt < 60 ? 16 : 250, signal);
  }
}

/** @param {any} model @param {string} name */
async function referencedModel(model, name) {
  const ref = String(model.get(name) || "");
  return model.widget_manager.get_model(ref.replace(/^IPY_MODEL_/, ""));
}

/**
 * The figure view shown in the same explorer as `el` (or the only one shown), once bqplot has
 * laid it out.
 * @param {any} figureModel @param {HTMLElement} el @param {AbortSignal} signal
 */
async function findFigureView(figureModel, el, signal) {
  return waitFor(async () => {
    if (!el.isConnected) return null;
    const home = el.closest(".imrec-umap-explorer");
    const views = await Promise.all(Object.values(figureModel.views || {}));
    const shown = views.filter((view) => view && view.el && view.el.isConnected);
    const mine = shown.find((view) => home && home.contains(view.el)) || (shown.length === 1 ? shown[0] : null);
    if (!mine || !mine.webGLCanvas || !(mine.plotareaWidth > 0) || !(mine.plotareaHeight > 0)) return null;
    return mine;
  }, signal);
}

/**
 * What this layer needs of bqplot's FigureView; missing pieces mean an unsupported version.
 * @param {any} view
 */
function checkFigureView(view) {
  const missing = ["padded_range", "webGLCanvas", "svg", "margin", "plotareaWidth", "plotareaHeight"]
    .filter((name) => view[name] === undefined);
  return missing.length ? `bqplot's figure lacks ${missing.join(", ")}` : "";
}

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
    const view = await findFigureView(figureModel, this.el, this.signal);
    const problem = checkFigureView(view);
    if (problem) {
      this.report("unsupported", problem);
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

  build() {
    const view = this.view;
    const canvas = document.createElement("canvas");
    canvas.className = "imrec-map-points";
    const gl = /** @type {WebGLRenderingContext | null} */ (canvas.getContext("webgl", {
      antialias: false, alpha: true, premultipliedAlpha: true, preserveDrawingBuffer: false,
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
    view.el.append(overlay, tooltip);
    this.cleanups.push(() => {
      canvas.remove();
      overlay.remove();
      tooltip.remove();
      if (this.thumbUrl) URL.revokeObjectURL(this.thumbUrl);
    });
  }

  listen() {
    const model = this.model;
    const on = (/** @type {any} */ target, /** @type {string} */ name, /** @type {any} */ callback) => {
      target.on(name, callback, this);
      this.cleanups.push(() => target.off(name, callback, this));
    };
    on(model, "change:x change:y change:codes change:palette change:mask", () => this.loadData());
    on(model, "change:point_size", () => this.requestFrame());
    on(model, "change:tool", () => this.applyTool());
    on(model, "msg:custom", (/** @type {any} */ msg, /** @type {any[]} */ buffers) => this.onMessage(msg, buffers));
    on(this.xScale, "change:min change:max", () => this.onDomainChanged());
    on(this.yScale, "change:min change:max", () => this.onDomainChanged());
    on(this.view, "margin_updated", () => this.layout());
    const resize = new ResizeObserver(() => this.layout());
    resize.observe(this.view.el);
    this.cleanups.push(() => resize.disconnect());

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
    this.canvas.width = Math.max(1, Math.round(width * ratio));
    this.canvas.height = Math.max(1, Math.round(height * ratio));
    this.svg?.setAttribute("width", String(width));
    this.svg?.setAttribute("height", String(height));
    this.requestFrame();
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
    for (const [scale, at] of [[this.xScale, x], [this.yScale, y]]) {
      const [min, max] = zoomDomain([scale.get("min"), scale.get("max")], at, factor);
      scale.set({ min, max });
      scale.save_changes();
    }
  }

  onDomainChanged() {
    this.requestFrame();
    this.hideTooltip();
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
    const size = this.model.get("point_size") || defaultPointSize(this.x ? this.x.length : 0);
    if (this.renderer) {
      this.renderer.draw(x, y, view.plotareaWidth, view.plotareaHeight, size, window.devicePixelRatio || 1);
    }
    this.redrawOutlines();
    this.frames += 1;
    // The data -> pixel maps in force, for tests and benchmarks that aim the pointer at points.
    canvas.dataset.xMap = `${x.a},${x.b}`;
    canvas.dataset.yMap = `${y.a},${y.b}`;
    canvas.dataset.points = String(this.renderer ? this.renderer.count : 0);
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
