// Pure front-end logic of the search widget: no DOM, no model. Unit-tested by node
// (js/tests/search_logic.test.mjs); inlined into search_widget.js by the Python side.

export const K_MIN = 1;
export const K_MAX = 100;

// Most files one query may hold (the Python side's MAX_QUERY_IMAGES).
export const MAX_FILES = 16;

// Uploads travel in pieces: Jupyter Server drops websocket messages over 10 MiB.
export const UPLOAD_CHUNK_BYTES = 4 * 1024 * 1024;

export const IMAGE_EXTENSIONS = [
  ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
];

export function baseName(path) {
  const parts = String(path ?? "").split(/[\\/]/);
  return parts[parts.length - 1] || String(path ?? "");
}

function extension(name) {
  const base = baseName(name);
  const dot = base.lastIndexOf(".");
  return dot > 0 ? base.slice(dot).toLowerCase() : "";
}

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

// A message saying why `file` ({name, size, type}) cannot be a query, or null when it may be
// sent. Files with a known non-image type are refused here; the Python side decodes the rest
// and has the final word.
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

// {files, error}: all of `files` when every one is acceptable, else none and the first reason.
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

// The files among clipboard / drag-and-drop items ({kind, type, getAsFile()}).
export function filesFromItems(items) {
  const files = [];
  for (const item of Array.from(items ?? [])) {
    if (item && item.kind === "file") {
      const file = item.getAsFile();
      if (file) files.push(file);
    }
  }
  return files;
}

// [start, end) byte ranges covering `size` bytes in pieces of at most `chunkBytes`.
export function chunkRanges(size, chunkBytes = UPLOAD_CHUNK_BYTES) {
  if (!(chunkBytes > 0)) throw new RangeError("chunkBytes must be positive");
  const ranges = [];
  for (let start = 0; start < size; start += chunkBytes) {
    ranges.push([start, Math.min(size, start + chunkBytes)]);
  }
  return ranges;
}

// k from an input's text: an integer within [K_MIN, K_MAX], or null when not a number.
export function clampK(value) {
  const n = Math.round(Number(value));
  if (String(value ?? "").trim() === "" || !Number.isFinite(n)) return null;
  return Math.min(K_MAX, Math.max(K_MIN, n));
}

// Distances: hamming counts bits (an integer); the others show 4 significant digits.
export function formatDistance(distance, metric) {
  const d = Number(distance);
  if (distance === null || distance === undefined || !Number.isFinite(d)) return "–";
  if (metric === "hamming") return String(Math.round(d));
  if (d === 0) return "0";
  if (Math.abs(d) < 1e-3) return d.toExponential(1);
  return String(Number(d.toPrecision(4)));
}

export function formatElapsed(ms) {
  const t = Number(ms);
  if (!Number.isFinite(t) || t < 0) return "";
  if (t < 1) return "<1 ms";
  if (t < 10) return `${t.toFixed(1)} ms`;
  if (t < 1000) return `${Math.round(t)} ms`;
  return `${(t / 1000).toFixed(t < 10000 ? 2 : 1)} s`;
}

// <option> descriptions for the metric menu: the mode's allowed metrics (default first);
// `selected` falls back to the default when it is not allowed.
export function metricOptions(metrics, selected) {
  const list = Array.from(metrics ?? []);
  const chosen = list.includes(selected) ? selected : list[0];
  return list.map((value, i) => ({
    value,
    label: i === 0 && list.length > 1 ? `${value} (default)` : value,
    selected: value === chosen,
  }));
}

// Side of a result cell in px: a few results get bigger cells, many get smaller ones. The
// grid itself is CSS `auto-fill`, so the number of columns follows the widget's width.
export function cellSize(count) {
  if (count <= 4) return 144;
  if (count <= 12) return 120;
  if (count <= 40) return 104;
  return 88;
}

// Characters of a file name that fit on two caption lines of a cell `cell` px wide (11px text,
// about 7px per character, 10px of padding and border), with a little to spare.
export function nameChars(cell) {
  return Math.max(8, 2 * Math.floor((Number(cell) - 10) / 7) - 1);
}

// `name` in at most `maxChars` characters: longer names lose their middle, not their end, since
// copies of a photo differ at the end ("hubble_deep_field_mirror.jpg").
export function fitName(name, maxChars) {
  const text = String(name ?? "");
  const chars = Array.from(text); // code points: never split a surrogate pair
  if (chars.length <= maxChars) return text;
  const keep = Math.max(2, maxChars - 1);
  const tail = Math.ceil(keep * 0.6);
  return chars.slice(0, keep - tail).join("") + "…" + chars.slice(chars.length - tail).join("");
}

// `name` cut into pieces a line may wrap between: after "_" and "-", and before the extension's
// dot ("hubble_", "deep_", "field", ".jpg"). Joined, the pieces are the name again.
export function nameParts(name) {
  return String(name ?? "").split(/(?<=[_-])|(?=\.[^.]*$)/).filter(Boolean);
}

export function summaryText(count, mode, metric) {
  if (!count) return "";
  return `${count} result${count === 1 ? "" : "s"} · ${mode} · ${metric}`;
}

// Hover text of a result: full path, rank and distance (a hybrid one is "fused": its metric
// is the weights, e.g. "0.7 embedding/cosine + 0.3 rgb/euclidean").
export function resultTitle(hit, metric, mode) {
  const kind = mode === HYBRID_MODE ? "fused" : metric;
  return `${hit.path}\n#${hit.rank + 1} · ${kind} distance ${formatDistance(hit.distance, metric)}` +
    "\nclick: more like this";
}

// -- hybrid mode: one weight slider per search mode ------------------------------------------

// The Python side's HYBRID_MODE: ranks by a weighted mix of the other modes.
export const HYBRID_MODE = "hybrid";

export const WEIGHT_MIN = 0;
export const WEIGHT_MAX = 1;
export const WEIGHT_STEP = 0.05;

// Moving a slider sends its weights (and re-runs the query) once it rests this long.
export const WEIGHT_DEBOUNCE_MS = 200;

// The modes that get a weight slider: every offered mode but hybrid itself.
export function sliderModes(modes) {
  return Array.from(modes ?? []).filter((mode) => mode !== HYBRID_MODE);
}

// A weight as a slider holds it: a multiple of WEIGHT_STEP within [WEIGHT_MIN, WEIGHT_MAX]
// (0 for anything that is not a number).
export function snapWeight(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return WEIGHT_MIN;
  const snapped = Math.round(n / WEIGHT_STEP) * WEIGHT_STEP;
  return Number(Math.min(WEIGHT_MAX, Math.max(WEIGHT_MIN, snapped)).toFixed(2));
}

// Each of `modes`' share of the fused distance: weights scaled to sum to 1, as the Python side
// does (missing, negative or non-numbers count as 0). All zero: every share is 0.
export function weightShares(weights, modes) {
  const raw = sliderModes(modes).map((mode) => {
    const n = Number(weights?.[mode] ?? 0);
    return [mode, Number.isFinite(n) && n > 0 ? n : 0];
  });
  const total = raw.reduce((sum, [, n]) => sum + n, 0);
  return Object.fromEntries(raw.map(([mode, n]) => [mode, total > 0 ? n / total : 0]));
}

export function formatShare(fraction) {
  const f = Number(fraction);
  if (!Number.isFinite(f) || f <= 0) return "0%";
  if (f < 0.01) return "<1%";
  return `${Math.round(f * 100)}%`;
}

// What each slider shows: [{mode, value (the slider's position), label, share}].
export function weightSliders(modes, weights) {
  const shares = weightShares(weights, modes);
  return sliderModes(modes).map((mode) => {
    const value = snapWeight(weights?.[mode] ?? 0);
    return { mode, value, label: value.toFixed(2), share: formatShare(shares[mode]) };
  });
}

// `weights` with `mode` set to `value` (snapped to the slider's steps); a new object.
export function withWeight(weights, mode, value) {
  return { ...(weights ?? {}), [mode]: snapWeight(value) };
}

// `fn` called once calls stop for `ms`; `.flush()` calls it now if one is pending, `.cancel()`
// drops it. `timers` ({setTimeout, clearTimeout}) is for tests.
export function debounce(fn, ms, timers = globalThis) {
  let timer = null;
  let args = null;
  const run = () => {
    timer = null;
    const pending = args;
    args = null;
    fn(...pending);
  };
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
