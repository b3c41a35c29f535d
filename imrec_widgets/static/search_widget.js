// @ts-check
// SearchWidget's front end, one ES module: anywidget loads this file (`_esm = Path(...)`) and
// calls its default export, which renders the Python-side state and sends user intent back as
// messages. It never writes a trait: Python owns them all and checks every message.
// The named exports are pure helpers (no DOM, no model) that `node --test js/tests/` imports.

// ---------------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------------

/** Bounds of k, the number of results (the Python side's K_MIN, K_MAX). */
export const K_MIN = 1;
export const K_MAX = 100;

/** Most files one query may hold (the Python side's MAX_QUERY_IMAGES). */
export const MAX_FILES = 16;

/** Uploads travel in pieces: Jupyter Server drops websocket messages over 10 MiB. */
export const UPLOAD_CHUNK_BYTES = 4 * 1024 * 1024;

/** The file name endings of images (the Python side's IMAGE_EXTENSIONS). */
export const IMAGE_EXTENSIONS = [
  ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
];

/**
 * What a file looks like to the checks here: a browser `File`, or any object with these.
 * @typedef {{name?: string, size?: number, type?: string}} FileLike
 */

/**
 * One hit of `results` as the Python side sends it.
 * @typedef {{id: number, path: string, distance: number, rank: number}} Hit
 */

/**
 * The last part of a path, after its last `/` or `\`.
 * @param {unknown} path
 * @returns {string}
 */
export function baseName(path) {
  const parts = String(path ?? "").split(/[\\/]/);
  return parts[parts.length - 1] || String(path ?? "");
}

/** @param {unknown} name @returns {string} ".jpg", or "" when the name has none */
function extension(name) {
  const base = baseName(name);
  const dot = base.lastIndexOf(".");
  return dot > 0 ? base.slice(dot).toLowerCase() : "";
}

/**
 * Bytes in decimal units, like the Python side's format_bytes: 20000000 -> "20 MB".
 * @param {unknown} bytes
 * @returns {string}
 */
export function formatBytes(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return "?";
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = n;
  let unit = "B";
  for (const next of units) {
    if (value < 1000) break;
    value /= 1000;
    unit = next;
  }
  const digits = value < 10 ? 1 : 0;
  return `${Number(value.toFixed(digits))} ${unit}`;
}

/**
 * A message saying why `file` cannot be a query, or null when it may be sent. Files with a
 * known non-image type are refused here; the Python side decodes the rest and has the final
 * word.
 * @param {FileLike | null | undefined} file
 * @param {number} maxBytes
 * @returns {string | null}
 */
export function validateFile(file, maxBytes) {
  const name = file?.name || "pasted image";
  const size = Number(file?.size ?? 0);
  const type = String(file?.type ?? "").toLowerCase();
  if (size === 0) return `${name} is empty (0 bytes)`;
  if (Number.isFinite(maxBytes) && maxBytes > 0 && size > maxBytes) {
    return `${name} is ${formatBytes(size)}, over the upload limit of ${formatBytes(maxBytes)}`;
  }
  if (type && !type.startsWith("image/")) {
    return `${name} is not an image (${type}); use ${IMAGE_EXTENSIONS.join(" ")}`;
  }
  if (!type && extension(name) && !IMAGE_EXTENSIONS.includes(extension(name))) {
    return `${name} is not an image file; use ${IMAGE_EXTENSIONS.join(" ")}`;
  }
  return null;
}

/**
 * All of `files` when every one is acceptable, else none and the first reason.
 * @template {FileLike} F
 * @param {Iterable<F> | ArrayLike<F> | null | undefined} files
 * @param {number} maxBytes
 * @param {number} [maxFiles]
 * @returns {{files: F[], error: string | null}}
 */
export function validateFiles(files, maxBytes, maxFiles = MAX_FILES) {
  const list = Array.from(files ?? []);
  if (list.length === 0) return { files: [], error: "no file was given" };
  if (list.length > maxFiles) {
    return { files: [], error: `${list.length} files at once is too many; one query takes at most ${maxFiles}` };
  }
  for (const file of list) {
    const error = validateFile(file, maxBytes);
    if (error) return { files: [], error };
  }
  return { files: list, error: null };
}

/**
 * The files among clipboard / drag-and-drop items.
 * @template F
 * @param {Iterable<{kind: string, getAsFile(): F | null}> | ArrayLike<{kind: string, getAsFile(): F | null}> | null | undefined} items
 * @returns {F[]}
 */
export function filesFromItems(items) {
  /** @type {F[]} */
  const files = [];
  for (const item of Array.from(items ?? [])) {
    if (item && item.kind === "file") {
      const file = item.getAsFile();
      if (file) files.push(file);
    }
  }
  return files;
}

/**
 * [start, end) byte ranges covering `size` bytes in pieces of at most `chunkBytes`.
 * @param {number} size
 * @param {number} [chunkBytes]
 * @returns {[number, number][]}
 */
export function chunkRanges(size, chunkBytes = UPLOAD_CHUNK_BYTES) {
  if (!(chunkBytes > 0)) throw new RangeError("chunkBytes must be positive");
  /** @type {[number, number][]} */
  const ranges = [];
  for (let start = 0; start < size; start += chunkBytes) {
    ranges.push([start, Math.min(size, start + chunkBytes)]);
  }
  return ranges;
}

/**
 * k from an input's text: an integer within [K_MIN, K_MAX], or null when not a number.
 * @param {unknown} value
 * @returns {number | null}
 */
export function clampK(value) {
  const n = Math.round(Number(value));
  if (String(value ?? "").trim() === "" || !Number.isFinite(n)) return null;
  return Math.min(K_MAX, Math.max(K_MIN, n));
}

/**
 * Distances: hamming counts bits (an integer); the others show 4 significant digits.
 * @param {unknown} distance
 * @param {string} metric
 * @returns {string}
 */
export function formatDistance(distance, metric) {
  const d = Number(distance);
  if (distance === null || distance === undefined || !Number.isFinite(d)) return "–";
  if (metric === "hamming") return String(Math.round(d));
  if (d === 0) return "0";
  if (Math.abs(d) < 1e-3) return d.toExponential(1);
  return String(Number(d.toPrecision(4)));
}

/**
 * How long a search took, for the status line: "<1 ms", "3.2 ms", "45 ms", "1.20 s".
 * @param {unknown} ms
 * @returns {string}
 */
export function formatElapsed(ms) {
  const t = Number(ms);
  if (!Number.isFinite(t) || t < 0) return "";
  if (t < 1) return "<1 ms";
  if (t < 10) return `${t.toFixed(1)} ms`;
  if (t < 1000) return `${Math.round(t)} ms`;
  return `${(t / 1000).toFixed(t < 10000 ? 2 : 1)} s`;
}

/**
 * <option> descriptions for the metric menu: the mode's allowed metrics (default first);
 * `selected` falls back to the default when it is not allowed.
 * @param {Iterable<string> | null | undefined} metrics
 * @param {string} selected
 * @returns {{value: string, label: string, selected: boolean}[]}
 */
export function metricOptions(metrics, selected) {
  const list = Array.from(metrics ?? []);
  const chosen = list.includes(selected) ? selected : list[0];
  return list.map((value, i) => ({
    value,
    label: i === 0 && list.length > 1 ? `${value} (default)` : value,
    selected: value === chosen,
  }));
}

/**
 * Side of a result cell in px: a few results get bigger cells, many get smaller ones. The
 * grid itself is CSS `auto-fill`, so the number of columns follows the widget's width.
 * @param {number} count
 * @returns {number}
 */
export function cellSize(count) {
  if (count <= 4) return 144;
  if (count <= 12) return 120;
  if (count <= 40) return 104;
  return 88;
}

/**
 * Characters of a file name that fit on two caption lines of a cell `cell` px wide (11px text,
 * about 7px per character, 10px of padding and border), with a little to spare.
 * @param {number} cell
 * @returns {number}
 */
export function nameChars(cell) {
  return Math.max(8, 2 * Math.floor((Number(cell) - 10) / 7) - 1);
}

/**
 * `name` in at most `maxChars` characters: longer names lose their middle, not their end,
 * since copies of a photo differ at the end ("hubble_deep_field_mirror.jpg").
 * @param {unknown} name
 * @param {number} maxChars
 * @returns {string}
 */
export function fitName(name, maxChars) {
  const text = String(name ?? "");
  const chars = Array.from(text); // code points: never split a surrogate pair
  if (chars.length <= maxChars) return text;
  const keep = Math.max(2, maxChars - 1);
  const tail = Math.ceil(keep * 0.6);
  return chars.slice(0, keep - tail).join("") + "…" + chars.slice(chars.length - tail).join("");
}

/**
 * `name` cut into pieces a line may wrap between: after "_" and "-", and before the
 * extension's dot ("hubble_", "deep_", "field", ".jpg"). Joined, the pieces are the name again.
 * @param {unknown} name
 * @returns {string[]}
 */
export function nameParts(name) {
  return String(name ?? "").split(/(?<=[_-])|(?=\.[^.]*$)/).filter(Boolean);
}

/**
 * The status line above the results: "3 results · rgb · euclidean" ("" for none).
 * @param {number} count
 * @param {string} mode
 * @param {string} metric
 * @returns {string}
 */
export function summaryText(count, mode, metric) {
  if (!count) return "";
  return `${count} result${count === 1 ? "" : "s"} · ${mode} · ${metric}`;
}

/**
 * Hover text of a result: full path, rank and distance (a hybrid one is "fused": its metric
 * is the weights, e.g. "0.7 embedding/cosine + 0.3 rgb/euclidean").
 * @param {Pick<Hit, "path" | "rank" | "distance">} hit
 * @param {string} metric
 * @param {string} mode
 * @returns {string}
 */
export function resultTitle(hit, metric, mode) {
  const kind = mode === HYBRID_MODE ? "fused" : metric;
  return `${hit.path}\n#${hit.rank + 1} · ${kind} distance ${formatDistance(hit.distance, metric)}` +
    "\nclick: more like this";
}

// -- messages to the Python side (user intent; Python checks each and owns every trait) -------

/** The controls a message may ask to change (the Python side's CONTROLS). */
export const CONTROLS = ["mode", "metric", "k", "weights", "within_tag"];

/**
 * The message asking Python to set control `name` to `value`.
 * @param {string} name one of CONTROLS
 * @param {unknown} value
 * @returns {{type: "set", name: string, value: unknown}}
 */
export function controlMessage(name, value) {
  if (!CONTROLS.includes(name)) throw new RangeError(`${name} is not a control`);
  return { type: "set", name, value };
}

/**
 * The message showing an error the browser found itself (a file it will not send).
 * @param {unknown} message
 * @returns {{type: "file_error", message: string}}
 */
export function fileErrorMessage(message) {
  return { type: "file_error", message: String(message ?? "") };
}

/** The message clearing the error shown (the user dismissed it). */
export const DISMISS_MESSAGE = Object.freeze({ type: "dismiss" });

// -- curation: pick results and tag them, 👍/👎 and refine -----------------------------------

/** Most ids one pick message names (the Python side's K_MAX: results shown at most). */
export const MAX_PICK = K_MAX;

/**
 * The message picking (or unpicking) results `ids`, each one shown.
 * @param {Iterable<number>} ids
 * @param {boolean} picked
 * @returns {{type: "pick", ids: number[], picked: boolean}}
 */
export function pickMessage(ids, picked) {
  const list = Array.from(ids, Number);
  if (list.length === 0 || list.length > MAX_PICK) {
    throw new RangeError(`a pick names 1 to ${MAX_PICK} results`);
  }
  return { type: "pick", ids: list, picked: Boolean(picked) };
}

/**
 * The ids a click on result `index` picks: that one, or with shift held the range from the
 * last clicked result `anchor` to it (either way round), in result order.
 * @param {number[]} ids the shown results' ids, best first
 * @param {number | null} anchor
 * @param {number} index
 * @param {boolean} shift
 * @returns {number[]}
 */
export function pickRange(ids, anchor, index, shift) {
  if (!shift || anchor === null || anchor < 0 || anchor >= ids.length) return ids.slice(index, index + 1);
  const [from, to] = anchor <= index ? [anchor, index] : [index, anchor];
  return ids.slice(from, to + 1);
}

/** What a mark message may set a result to (the Python side's MARKS). */
export const MARKS = ["relevant", "not_relevant", "none"];

/**
 * The mark a click on the 👍 ("relevant") or 👎 ("not_relevant") button gives a result
 * marked `current`: that mark, or none when it already had it (the button toggles).
 * @param {string} current "relevant", "not_relevant" or "none"
 * @param {"relevant" | "not_relevant"} button
 * @returns {string}
 */
export function nextMark(current, button) {
  return current === button ? "none" : button;
}

/**
 * The message marking result `id` relevant, not relevant or neither.
 * @param {number} id
 * @param {string} mark one of MARKS
 * @returns {{type: "mark", id: number, mark: string}}
 */
export function markMessage(id, mark) {
  if (!MARKS.includes(mark)) throw new RangeError(`${mark} is not a mark`);
  return { type: "mark", id: Number(id), mark };
}

/**
 * The mark of `id`: "relevant", "not_relevant" or "none".
 * @param {number} id
 * @param {Iterable<number> | null | undefined} relevant
 * @param {Iterable<number> | null | undefined} notRelevant
 * @returns {string}
 */
export function markOf(id, relevant, notRelevant) {
  if (Array.from(relevant ?? []).includes(id)) return "relevant";
  if (Array.from(notRelevant ?? []).includes(id)) return "not_relevant";
  return "none";
}

/**
 * The message tagging (or, `add` false, untagging) the picked results `name`; Python trims
 * and checks the name.
 * @param {unknown} name
 * @param {boolean} add
 * @returns {{type: "tag", name: string, add: boolean}}
 */
export function tagMessage(name, add) {
  return { type: "tag", name: String(name ?? ""), add: Boolean(add) };
}

/** The message asking for the search again with the 👍/👎 marks as feedback. */
export const REFINE_MESSAGE = Object.freeze({ type: "refine" });

/**
 * One tag of the index as Python sends it.
 * @typedef {{name: string, count: number}} TagCount
 */

/**
 * <option> descriptions of "search within tag": every image, then each tag with its count.
 * @param {TagCount[] | null | undefined} tags
 * @param {string} selected
 * @returns {{value: string, label: string, selected: boolean}[]}
 */
export function withinOptions(tags, selected) {
  const list = Array.from(tags ?? []);
  const chosen = list.some((t) => t.name === selected) ? selected : "";
  return [
    { value: "", label: "all images", selected: chosen === "" },
    ...list.map((t) => ({ value: t.name, label: `${t.name} (${t.count})`, selected: t.name === chosen })),
  ];
}

/**
 * The line beside "refine": how many are marked each way ("" for none).
 * @param {unknown[] | null | undefined} relevant
 * @param {unknown[] | null | undefined} notRelevant
 * @returns {string}
 */
export function marksText(relevant, notRelevant) {
  const up = (relevant ?? []).length;
  const down = (notRelevant ?? []).length;
  return up || down ? `${up} relevant · ${down} not` : "";
}

/**
 * The line beside the tag box: "3 picked" ("" for none).
 * @param {unknown[] | null | undefined} picked
 * @returns {string}
 */
export function pickedText(picked) {
  const n = (picked ?? []).length;
  return n ? `${n} picked` : "";
}

// -- hybrid mode: one weight slider per search mode ------------------------------------------

/** The Python side's HYBRID_MODE: ranks by a weighted mix of the other modes. */
export const HYBRID_MODE = "hybrid";

export const WEIGHT_MIN = 0;
export const WEIGHT_MAX = 1;
export const WEIGHT_STEP = 0.05;

/** Moving a slider sends its weights (and re-runs the query) once it rests this long. */
export const WEIGHT_DEBOUNCE_MS = 200;

/**
 * The modes that get a weight slider: every offered mode but hybrid itself.
 * @param {Iterable<string> | null | undefined} modes
 * @returns {string[]}
 */
export function sliderModes(modes) {
  return Array.from(modes ?? []).filter((mode) => mode !== HYBRID_MODE);
}

/**
 * A weight as a slider holds it: a multiple of WEIGHT_STEP within [WEIGHT_MIN, WEIGHT_MAX]
 * (0 for anything that is not a number).
 * @param {unknown} value
 * @returns {number}
 */
export function snapWeight(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return WEIGHT_MIN;
  const snapped = Math.round(n / WEIGHT_STEP) * WEIGHT_STEP;
  return Number(Math.min(WEIGHT_MAX, Math.max(WEIGHT_MIN, snapped)).toFixed(2));
}

/**
 * Each of `modes`' share of the fused distance: weights scaled to sum to 1, as the Python side
 * does (missing, negative or non-numbers count as 0). All zero: every share is 0.
 * @param {Record<string, unknown> | null | undefined} weights
 * @param {Iterable<string> | null | undefined} modes
 * @returns {Record<string, number>}
 */
export function weightShares(weights, modes) {
  const raw = sliderModes(modes).map((mode) => {
    const n = Number(weights?.[mode] ?? 0);
    return /** @type {[string, number]} */ ([mode, Number.isFinite(n) && n > 0 ? n : 0]);
  });
  const total = raw.reduce((sum, [, n]) => sum + n, 0);
  return Object.fromEntries(raw.map(([mode, n]) => [mode, total > 0 ? n / total : 0]));
}

/**
 * A share as a percentage: "30%", "<1%", "0%".
 * @param {unknown} fraction
 * @returns {string}
 */
export function formatShare(fraction) {
  const f = Number(fraction);
  if (!Number.isFinite(f) || f <= 0) return "0%";
  if (f < 0.01) return "<1%";
  return `${Math.round(f * 100)}%`;
}

/**
 * What each slider shows: its mode, position, label and share.
 * @param {Iterable<string> | null | undefined} modes
 * @param {Record<string, unknown> | null | undefined} weights
 * @returns {{mode: string, value: number, label: string, share: string}[]}
 */
export function weightSliders(modes, weights) {
  const shares = weightShares(weights, modes);
  return sliderModes(modes).map((mode) => {
    const value = snapWeight(weights?.[mode] ?? 0);
    return { mode, value, label: value.toFixed(2), share: formatShare(shares[mode]) };
  });
}

/**
 * `weights` with `mode` set to `value` (snapped to the slider's steps); a new object.
 * @param {Record<string, number> | null | undefined} weights
 * @param {string} mode
 * @param {unknown} value
 * @returns {Record<string, number>}
 */
export function withWeight(weights, mode, value) {
  return { ...(weights ?? {}), [mode]: snapWeight(value) };
}

/**
 * Whether two weights give every mode the same number (a missing mode counts as 0).
 * @param {Record<string, unknown> | null | undefined} a
 * @param {Record<string, unknown> | null | undefined} b
 * @returns {boolean}
 */
export function sameWeights(a, b) {
  const modes = new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})]);
  return [...modes].every((mode) => Number(a?.[mode] ?? 0) === Number(b?.[mode] ?? 0));
}

/**
 * A debounced function: `fn(...args)` with the last call's arguments, once `ms` passed
 * without another call.
 * @template {unknown[]} A
 * @typedef {((...args: A) => void) & {flush(): void, cancel(): void, pending(): boolean}} Debounced
 */

/**
 * `fn` called once calls stop for `ms`; `.flush()` calls it now if one is pending, `.cancel()`
 * drops it. `timers` ({setTimeout, clearTimeout}) is for tests.
 * @template {unknown[]} A
 * @param {(...args: A) => void} fn
 * @param {number} ms
 * @param {{setTimeout(handler: () => void, ms: number): unknown, clearTimeout(timer: any): void}} [timers]
 * @returns {Debounced<A>}
 */
export function debounce(fn, ms, timers = globalThis) {
  /** @type {unknown} */
  let timer = null;
  /** @type {A | null} */
  let args = null;
  const run = () => {
    timer = null;
    const pending = /** @type {A} */ (args);
    args = null;
    fn(...pending);
  };
  /** @param {A} callArgs */
  const debounced = (...callArgs) => {
    args = callArgs;
    if (timer !== null) timers.clearTimeout(timer);
    timer = timers.setTimeout(run, ms);
  };
  debounced.flush = () => {
    if (timer === null) return;
    timers.clearTimeout(timer);
    run();
  };
  debounced.cancel = () => {
    if (timer !== null) timers.clearTimeout(timer);
    timer = null;
    args = null;
  };
  debounced.pending = () => timer !== null;
  return debounced;
}

// ---------------------------------------------------------------------------------------------
// The widget
// ---------------------------------------------------------------------------------------------

/**
 * What this module uses of anywidget's model (`AnyModel` in @anywidget/types).
 * (It reads traits and sends messages; it never calls `set`/`save_changes`.)
 * @typedef {object} Model
 * @property {(name: string) => any} get
 * @property {(content: object, callbacks?: unknown, buffers?: ArrayBuffer[]) => void} send
 * @property {(event: string, fn: (...args: any[]) => void) => void} on
 * @property {(event: string, fn: (...args: any[]) => void) => void} off
 */

/**
 * A new element: `props.text` is its text, other props are properties where the element has
 * one of that name, attributes otherwise.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} className
 * @param {Record<string, string | number | boolean>} [props]
 * @returns {HTMLElementTagNameMap[K]}
 */
function h(tag, className, props = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = String(value);
    else if (key in node) /** @type {any} */ (node)[key] = value;
    else node.setAttribute(key, String(value));
  }
  return node;
}

/**
 * An object URL of one JPEG of a binary trait (revoke it when done).
 * @param {DataView | ArrayBuffer | Uint8Array} part
 * @returns {string}
 */
function jpegUrl(part) {
  // Binary traits arrive as DataView (ipywidgets buffers); accept any buffer view.
  const bytes = part instanceof DataView
    ? new Uint8Array(part.buffer, part.byteOffset, part.byteLength)
    : part;
  return URL.createObjectURL(new Blob([/** @type {BlobPart} */ (bytes)], { type: "image/jpeg" }));
}

/**
 * A file name that wraps at its "_", "-" and extension rather than mid-word.
 * @param {string} className
 * @param {string} name
 */
function nameSpan(className, name) {
  const span = h("span", className);
  for (const [i, part] of nameParts(name).entries()) {
    if (i) span.append(document.createElement("wbr"));
    span.append(part);
  }
  return span;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Material Design's "thumb_up" (Apache-2.0), drawn in the text colour. */
const THUMB_PATH =
  "M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 " +
  "1 7.59 7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09" +
  "-.23.14-.47.14-.73v-2z";

/**
 * A thumb up (or, `down`, down) icon: an inline SVG, so it shows where no emoji font is.
 * @param {boolean} down
 * @returns {SVGSVGElement}
 */
function thumbIcon(down) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "imrec-mark-icon");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", THUMB_PATH);
  path.setAttribute("fill", "currentColor");
  if (down) path.setAttribute("transform", "rotate(180 12 12)");
  svg.append(path);
  return svg;
}

/** @param {string} text @param {HTMLElement} control */
function labelled(text, control) {
  const label = h("label", "imrec-control");
  label.append(h("span", "imrec-control-label", { text }), control);
  return label;
}

let uploadCounter = 0;
let widgetCounter = 0;

/**
 * Send `fileList` as one query: each file in chunks (binary buffers), then the query naming
 * them; or, when one cannot be a query, say why in `error` and send nothing.
 * @param {Model} model
 * @param {File[]} fileList
 * @param {(pending: boolean) => void} setPending
 */
async function sendFiles(model, fileList, setPending) {
  const { files, error } = validateFiles(fileList, model.get("max_upload_bytes"));
  if (error) {
    model.send(fileErrorMessage(error));
    return;
  }
  setPending(true);
  try {
    const upload = `${Date.now().toString(36)}-${++uploadCounter}`;
    const meta = [];
    for (const [index, file] of files.entries()) {
      const buffer = await file.arrayBuffer();
      for (const [start, end] of chunkRanges(buffer.byteLength)) {
        model.send({ type: "chunk", upload, file: index, offset: start }, undefined, [
          buffer.slice(start, end),
        ]);
      }
      meta.push({ name: file.name || "pasted image", size: buffer.byteLength, type: file.type });
    }
    model.send({ type: "query", upload, files: meta });
  } catch (err) {
    setPending(false);
    model.send(fileErrorMessage(`could not read the file: ${err instanceof Error ? err.message : err}`));
  }
}

/**
 * anywidget's render: draw the widget into `el`, follow `model`; returns the cleanup.
 * @param {{model: Model, el: HTMLElement}} context
 * @returns {() => void}
 */
function render({ model, el }) {
  const root = h("div", "imrec-search");
  /** @type {string[]} */
  let urls = [];

  // -- controls
  // Keys typed into the controls are theirs, not JupyterLab's notebook shortcuts (arrows,
  // Enter). Lumino matches a shortcut's selector against the focused element itself before
  // looking for this attribute on its ancestors, so each control carries it.
  const own = { "data-lm-suppress-shortcuts": "true" };
  const mode = h("select", "imrec-mode", { ...own, title: "what to compare: features of the images" });
  const metric = h("select", "imrec-metric", { ...own, title: "how to measure the distance" });
  const k = h("input", "imrec-k", {
    ...own, type: "number", min: String(K_MIN), max: String(K_MAX), step: "1",
    title: `number of results (${K_MIN}–${K_MAX})`,
  });
  const busy = h("span", "imrec-busy", { title: "searching…", "aria-hidden": "true" });
  const within = h("select", "imrec-within", {
    ...own, title: "search only the images with this tag",
  });
  const toolbar = h("div", "imrec-toolbar", own);
  const metricLabel = labelled("Metric", metric);
  const withinLabel = labelled("Within", within);
  toolbar.append(labelled("Mode", mode), metricLabel, labelled("k", k), withinLabel, busy);

  // -- hybrid weights: one slider per search mode, shown in the hybrid mode only
  const weights = h("div", "imrec-weights", {
    ...own, role: "group", "aria-label": "hybrid weights",
    title: "hybrid: how much each mode counts in the fused distance (shares in brackets)",
  });

  // -- drop zone: query thumbnails, hint, file button
  const fileInput = h("input", "imrec-file-input", {
    type: "file", accept: "image/*", multiple: true, tabIndex: -1,
  });
  const fileButton = h("label", "imrec-file-button", { text: "Choose images…" });
  fileButton.append(fileInput);
  const query = h("div", "imrec-query");
  const hint = h("span", "imrec-hint", {
    text: "Drop images here, paste one, or choose files. Click a result for more like it.",
  });
  const dropzone = h("div", "imrec-dropzone", { tabIndex: 0, title: "drop or paste images here" });
  dropzone.append(query, hint, fileButton);

  // -- messages and results
  const errorText = h("span", "imrec-error-text");
  const dismiss = h("button", "imrec-error-dismiss", { type: "button", text: "×", title: "dismiss" });
  const error = h("div", "imrec-error", { role: "alert" });
  error.append(errorText, dismiss);
  const summary = h("span", "imrec-summary");
  const elapsed = h("span", "imrec-elapsed");
  const status = h("div", "imrec-status");
  status.append(summary, elapsed);
  const grid = h("div", "imrec-results");

  // -- curation: tag the picked results; refine with the 👍/👎 marks
  const suggestions = h("datalist", "imrec-tag-suggestions", { id: `imrec-tags-${++widgetCounter}` });
  const tagInput = h("input", "imrec-tag-input", {
    ...own, type: "text", placeholder: "tag name", maxLength: 100,
    "aria-label": "tag name", title: "a tag for the picked results (existing tags are suggested)",
  });
  tagInput.setAttribute("list", suggestions.id); // `list` is a read-only property: the attribute
  const tagButton = h("button", "imrec-tag-button", { type: "button", text: "Tag picked" });
  const untagButton = h("button", "imrec-untag-button", { type: "button", text: "Untag" });
  const pickedCount = h("span", "imrec-picked-count");
  const unpick = h("button", "imrec-unpick", { type: "button", text: "clear", title: "unpick every result" });
  const refine = h("button", "imrec-refine", { type: "button", text: "Refine" });
  const marksCount = h("span", "imrec-marks-count");
  const notice = h("span", "imrec-notice", { role: "status" });
  const tagging = h("div", "imrec-tagging", { role: "group", "aria-label": "tag picked results" });
  tagging.append(pickedCount, unpick, tagInput, suggestions, tagButton, untagButton);
  const feedback = h("div", "imrec-feedback", { role: "group", "aria-label": "relevance feedback" });
  feedback.append(refine, marksCount);
  const curate = h("div", "imrec-curate", own);
  curate.append(tagging, feedback, notice);

  root.append(toolbar, weights, dropzone, error, status, curate, grid);
  el.append(root);

  let pending = false;
  /** @type {number | null} the result last picked by a click: a shift-click ranges from it */
  let anchor = null;
  /** @param {boolean} value */
  const setPending = (value) => {
    pending = value;
    root.classList.toggle("imrec-is-busy", pending || model.get("busy"));
  };
  /** @param {File[]} files */
  const submit = (files) => {
    if (files.length) sendFiles(model, files, setPending);
  };

  // -- rendering state
  function renderControls() {
    /** @type {string[]} */
    const modes = model.get("modes") || [];
    mode.replaceChildren(...modes.map((m) => h("option", "", { value: m, text: m })));
    mode.value = model.get("mode");
    metric.replaceChildren(
      ...metricOptions(model.get("metrics"), model.get("metric")).map((o) =>
        h("option", "", { value: o.value, text: o.label, selected: o.selected })
      ),
    );
    k.value = String(model.get("k"));
    metricLabel.hidden = (model.get("metrics") || []).length === 0; // none in the hybrid mode
    /** @type {TagCount[]} */
    const tags = model.get("tags") || [];
    within.replaceChildren(
      ...withinOptions(tags, model.get("within_tag")).map((o) =>
        h("option", "", { value: o.value, text: o.label, selected: o.selected })
      ),
    );
    within.value = model.get("within_tag");
    withinLabel.hidden = tags.length === 0 && !model.get("within_tag"); // only once there are tags
  }

  // Weights being edited (slider moved, not yet sent), else null: shown instead of the model's.
  /** @type {Record<string, number> | null} */
  let draft = null;
  function renderWeights() {
    weights.hidden = model.get("mode") !== HYBRID_MODE;
    const sliders = weightSliders(model.get("modes"), draft ?? model.get("weights"));
    const shown = Array.from(
      /** @type {NodeListOf<HTMLInputElement>} */ (weights.querySelectorAll(".imrec-weight-slider")),
      (s) => s.dataset.mode,
    );
    if (shown.join() !== sliders.map((s) => s.mode).join()) {
      weights.replaceChildren(
        h("span", "imrec-control-label", { text: "Weights" }),
        ...sliders.map(({ mode: name }) => {
          const row = h("label", "imrec-weight");
          const slider = h("input", "imrec-weight-slider", {
            ...own, type: "range", min: String(WEIGHT_MIN), max: String(WEIGHT_MAX), step: String(WEIGHT_STEP),
            "aria-label": `weight of ${name}`,
          });
          slider.dataset.mode = name;
          row.append(
            h("span", "imrec-weight-name", { text: name }), slider,
            h("span", "imrec-weight-value"), h("span", "imrec-weight-share"),
          );
          return row;
        }),
      );
    }
    for (const [i, row] of Array.from(weights.querySelectorAll(".imrec-weight")).entries()) {
      const { value, label, share } = sliders[i];
      const slider = /** @type {HTMLInputElement} */ (row.querySelector(".imrec-weight-slider"));
      if (Number(slider.value) !== value) slider.value = String(value);
      /** @type {HTMLElement} */ (row.querySelector(".imrec-weight-value")).textContent = label;
      /** @type {HTMLElement} */ (row.querySelector(".imrec-weight-share")).textContent = `(${share})`;
      row.classList.toggle("imrec-weight-off", value === 0);
    }
  }

  function renderError() {
    const message = model.get("error");
    errorText.textContent = message;
    error.hidden = !message;
  }

  function renderBusy() {
    if (!model.get("busy")) pending = false;
    root.classList.toggle("imrec-is-busy", pending || model.get("busy"));
  }

  function renderImages() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    /** @param {string} url */
    const track = (url) => (urls.push(url), url);

    /** @type {string[]} */
    const names = model.get("query_names") || [];
    /** @type {DataView[]} */
    const queryThumbs = model.get("query_thumbnails") || [];
    query.replaceChildren(
      ...queryThumbs.map((bytes, i) => {
        const figure = h("figure", "imrec-query-image", { title: names[i] ?? "" });
        const img = h("img", "", { alt: names[i] ?? "query image" });
        if (bytes.byteLength) img.src = track(jpegUrl(bytes)); // empty: an image gone since indexing
        figure.append(img, h("figcaption", "", { text: baseName(names[i] ?? "") }));
        return figure;
      }),
    );
    dropzone.classList.toggle("imrec-has-query", query.childElementCount > 0);

    /** @type {Hit[]} */
    const hits = model.get("results") || [];
    /** @type {DataView[]} */
    const thumbs = model.get("thumbnails") || [];
    const metricName = model.get("result_metric");
    const cell = cellSize(hits.length);
    const maxChars = nameChars(cell);
    grid.style.setProperty("--imrec-cell", `${cell}px`);
    // A result chosen from the keyboard is replaced by the new ones: the first new one takes the
    // focus, or it would fall back to the page and the keyboard user would lose their place.
    const hadFocus = grid.contains(document.activeElement);
    anchor = null;
    grid.replaceChildren(
      ...hits.map((hit, i) => {
        const name = baseName(hit.path);
        const title = resultTitle(hit, metricName, model.get("result_mode"));
        // The slot holds the result (a button: more like this) and, beside it rather than in
        // it (no control inside a button), its pick box and 👍/👎: tab order box, result, marks.
        const slot = h("div", "imrec-slot");
        slot.dataset.id = String(hit.id);
        slot.dataset.index = String(i);
        const box = h("input", "imrec-pick", {
          ...own, type: "checkbox", "aria-label": `pick ${name}`, title: "pick (shift: a range)",
        });
        const cell = h("button", "imrec-result", { type: "button", title });
        cell.dataset.id = String(hit.id);
        const img = h("img", "imrec-result-image", { alt: name, draggable: false });
        if (thumbs[i]?.byteLength) img.src = track(jpegUrl(thumbs[i]));
        const caption = h("span", "imrec-result-caption");
        caption.append(
          nameSpan("imrec-result-name", fitName(name, maxChars)),
          h("span", "imrec-distance", { text: formatDistance(hit.distance, metricName) }),
        );
        cell.append(img, caption);
        const marks = h("span", "imrec-marks");
        const up = h("button", "imrec-mark imrec-mark-up", {
          ...own, type: "button", title: "👍 relevant: more like this (then Refine)",
          "aria-label": `relevant: ${name}`, "aria-pressed": "false",
        });
        up.dataset.mark = "relevant";
        up.append(thumbIcon(false));
        const down = h("button", "imrec-mark imrec-mark-down", {
          ...own, type: "button", title: "👎 not relevant: less like this (then Refine)",
          "aria-label": `not relevant: ${name}`, "aria-pressed": "false",
        });
        down.dataset.mark = "not_relevant";
        down.append(thumbIcon(true));
        marks.append(up, down);
        slot.append(box, cell, marks);
        return slot;
      }),
    );
    if (hadFocus) /** @type {HTMLElement | null} */ (grid.querySelector(".imrec-result"))?.focus();
    renderCuration();
    const scope = model.get("scope_size");
    summary.textContent =
      summaryText(hits.length, model.get("result_mode"), metricName) +
      (scope >= 0 ? ` · within ${scope} selected` : "");
    elapsed.textContent = hits.length ? formatElapsed(model.get("elapsed_ms")) : "";
  }

  // Picks, marks, the tag box and refine follow Python's traits without redrawing the results.
  function renderCuration() {
    /** @type {number[]} */
    const picked = model.get("picked") || [];
    /** @type {number[]} */
    const relevant = model.get("relevant") || [];
    /** @type {number[]} */
    const notRelevant = model.get("not_relevant") || [];
    for (const slot of /** @type {NodeListOf<HTMLElement>} */ (grid.querySelectorAll(".imrec-slot"))) {
      const id = Number(slot.dataset.id);
      const box = /** @type {HTMLInputElement} */ (slot.querySelector(".imrec-pick"));
      box.checked = picked.includes(id);
      slot.classList.toggle("imrec-picked", box.checked);
      const mark = markOf(id, relevant, notRelevant);
      for (const button of /** @type {NodeListOf<HTMLElement>} */ (slot.querySelectorAll(".imrec-mark"))) {
        button.setAttribute("aria-pressed", String(button.dataset.mark === mark));
      }
      slot.dataset.mark = mark;
    }
    const hasResults = (model.get("results") || []).length > 0;
    curate.hidden = !hasResults;
    pickedCount.textContent = pickedText(picked);
    unpick.hidden = picked.length === 0;
    for (const button of [tagButton, untagButton]) {
      button.setAttribute("aria-disabled", String(picked.length === 0));
      button.title = picked.length
        ? `${button === tagButton ? "tag" : "untag"} the ${picked.length} picked result${picked.length === 1 ? "" : "s"}`
        : "pick results first (tick their boxes; shift-click ticks a range)";
    }
    /** @type {TagCount[]} */
    const tags = model.get("tags") || [];
    suggestions.replaceChildren(...tags.map((t) => h("option", "", { value: t.name })));
    const reason = model.get("refine_reason");
    refine.setAttribute("aria-disabled", String(Boolean(reason)));
    refine.title = reason || "search again: more like the 👍 results, less like the 👎 ones";
    marksCount.textContent = marksText(relevant, notRelevant) + (model.get("refined") ? " · refined" : "");
    notice.textContent = model.get("notice");
  }

  renderControls();
  renderWeights();
  renderError();
  renderBusy();
  renderImages();

  // -- intents
  // A control shows the user's pick at once; Python sets the trait (the control then follows
  // it) or refuses the value and says so: the control goes back to the trait's value.
  /** @param {string} name @param {unknown} value */
  const setControl = (name, value) => model.send(controlMessage(name, value));
  mode.addEventListener("change", () => setControl("mode", mode.value));
  metric.addEventListener("change", () => setControl("metric", metric.value));
  const commitK = () => {
    const clamped = clampK(k.value);
    k.value = String(clamped ?? model.get("k"));
    if (clamped !== null && clamped !== model.get("k")) setControl("k", clamped);
  };
  k.addEventListener("change", commitK);
  // The draft stays shown until Python's weights arrive (or it refuses them).
  const sendWeights = debounce(() => {
    if (draft) setControl("weights", draft);
  }, WEIGHT_DEBOUNCE_MS);
  weights.addEventListener("input", (event) => {
    const slider = /** @type {HTMLInputElement | null} */ (
      /** @type {HTMLElement} */ (event.target).closest(".imrec-weight-slider")
    );
    if (!slider) return;
    draft = withWeight(draft ?? model.get("weights"), slider.dataset.mode ?? "", slider.value);
    renderWeights();
    sendWeights();
  });
  weights.addEventListener("change", () => sendWeights.flush()); // released: send now
  k.addEventListener("keydown", (event) => {
    if (event.key === "Enter") commitK();
  });
  // Enter and Space (Shift too) press a focused result or the dismiss button: the key is the
  // widget's. JupyterLab and Notebook 7 would act on it as well (Shift+Enter reruns the cell,
  // replacing this widget and its results), and Notebook 7 sees keys before the widget does,
  // so they are stopped on their way down, at the window.
  /** @param {KeyboardEvent} event */
  const ownKeys = (event) => {
    const target = event.target;
    if (
      (event.key === "Enter" || event.key === " ") &&
      !(event.ctrlKey || event.altKey || event.metaKey) &&
      target instanceof HTMLButtonElement &&
      root.contains(target)
    ) {
      event.stopPropagation();
    }
  };
  window.addEventListener("keydown", ownKeys, true);
  fileInput.addEventListener("change", () => {
    const files = Array.from(fileInput.files ?? []);
    fileInput.value = ""; // choosing the same file again must fire "change" again
    submit(files);
  });
  grid.addEventListener("click", (event) => {
    const target = /** @type {HTMLElement} */ (event.target);
    const slot = /** @type {HTMLElement | null} */ (target.closest(".imrec-slot"));
    if (!slot || !grid.contains(slot)) return;
    const id = Number(slot.dataset.id);
    if (target.closest(".imrec-pick")) {
      const box = /** @type {HTMLInputElement} */ (target.closest(".imrec-pick"));
      /** @type {number[]} */
      const ids = (model.get("results") || []).map((/** @type {Hit} */ hit) => hit.id);
      const index = Number(slot.dataset.index);
      // the box shows its new state at once; Python's picks follow (a range: every box)
      model.send(pickMessage(pickRange(ids, anchor, index, /** @type {MouseEvent} */ (event).shiftKey), box.checked));
      anchor = index;
      return;
    }
    const markButton = /** @type {HTMLElement | null} */ (target.closest(".imrec-mark"));
    if (markButton) {
      const button = /** @type {"relevant" | "not_relevant"} */ (markButton.dataset.mark);
      model.send(markMessage(id, nextMark(slot.dataset.mark ?? "none", button)));
      return;
    }
    if (target.closest(".imrec-result")) {
      setPending(true);
      model.send({ type: "more_like", id });
    }
  });
  /** @param {boolean} add */
  const sendTag = (add) => {
    const picked = model.get("picked") || [];
    if (!picked.length) return; // the button's tooltip says to pick first
    model.send(tagMessage(tagInput.value, add));
  };
  tagButton.addEventListener("click", () => sendTag(true));
  untagButton.addEventListener("click", () => sendTag(false));
  tagInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") sendTag(true);
  });
  unpick.addEventListener("click", () => {
    const picked = model.get("picked") || [];
    if (picked.length) model.send(pickMessage(picked, false));
  });
  refine.addEventListener("click", () => {
    if (refine.getAttribute("aria-disabled") === "true") return; // its tooltip says why
    setPending(true);
    model.send(REFINE_MESSAGE);
  });
  within.addEventListener("change", () => setControl("within_tag", within.value));
  dismiss.addEventListener("click", () => {
    error.hidden = true; // at once; Python's cleared error follows
    model.send(DISMISS_MESSAGE);
  });

  /** @param {DragEvent} event */
  const onDragOver = (event) => {
    const transfer = event.dataTransfer;
    if (!transfer || !Array.from(transfer.types).includes("Files")) return;
    event.preventDefault();
    transfer.dropEffect = "copy";
    dropzone.classList.add("imrec-dragover");
  };
  dropzone.addEventListener("dragenter", onDragOver);
  dropzone.addEventListener("dragover", onDragOver);
  dropzone.addEventListener("dragleave", (event) => {
    if (!dropzone.contains(/** @type {Node | null} */ (event.relatedTarget))) dropzone.classList.remove("imrec-dragover");
  });
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation(); // JupyterLab would otherwise try to open the file
    dropzone.classList.remove("imrec-dragover");
    submit(Array.from(event.dataTransfer?.files ?? []));
  });
  root.addEventListener("paste", (event) => {
    const files = filesFromItems(event.clipboardData?.items);
    if (files.length) {
      event.preventDefault();
      event.stopPropagation();
      submit(files);
    }
  });

  /** @typedef {[string, (...args: any[]) => void]} Listener an event and what handles it */
  /** @param {string[]} names @param {() => void} fn @returns {Listener[]} */
  const each = (names, fn) => names.map((name) => /** @type {Listener} */ ([name, fn]));
  const listeners = [
    ...each(["modes", "mode", "metrics", "metric", "k", "tags", "within_tag"], renderControls),
    ...each(["picked", "relevant", "not_relevant", "tags", "refine_reason", "refined", "notice"], renderCuration),
    ...each(["modes", "mode", "weights"], renderWeights),
    ...each(["error"], renderError),
    ...each(["busy"], renderBusy),
    ...each(
      ["results", "thumbnails", "query_thumbnails", "query_names", "elapsed_ms", "scope_size"],
      renderImages,
    ),
  ];
  // One model update changes several traits; render each part once per update.
  /** @type {Set<() => void>} */
  const queued = new Set();
  /** @param {() => void} fn */
  const later = (fn) => () => {
    if (queued.has(fn)) return;
    queued.add(fn);
    queueMicrotask(() => {
      queued.delete(fn);
      if (!disposed) fn();
    });
  };
  let disposed = false;
  const handlers = listeners.map(([name, fn]) => /** @type {Listener} */ ([`change:${name}`, later(fn)]));
  /** @param {unknown} message */
  const onMessage = (message) => {
    if (/** @type {{type?: unknown}} */ (message)?.type !== "refused") return;
    draft = null; // refused weights: the sliders go back to Python's
    later(renderControls)();
    later(renderWeights)();
  };
  handlers.push(["msg:custom", onMessage]);
  // Python's weights replace the draft once they are the draft (earlier ones may still
  // arrive while the slider moves on: showing them would make it jump back).
  handlers.push(["change:weights", () => {
    if (!sendWeights.pending() && sameWeights(draft, model.get("weights"))) draft = null;
  }]);
  for (const [event, fn] of handlers) model.on(event, fn);

  return () => {
    disposed = true;
    window.removeEventListener("keydown", ownKeys, true);
    sendWeights.cancel();
    for (const [event, fn] of handlers) model.off(event, fn);
    for (const url of urls) URL.revokeObjectURL(url);
  };
}

export default { render };
