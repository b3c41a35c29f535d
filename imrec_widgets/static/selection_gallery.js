// @ts-check
// SelectionGallery's front end, one ES module: it draws the thumbnails of one page of a map's
// selection and sends a click as a message ({event: "toggle", id}); it never writes a trait.
// The named exports are pure helpers (no DOM, no model) that `node --test js/tests/` imports.

/**
 * One image on the page as the Python side sends it.
 * @typedef {{id: number, path: string, out: boolean}} Item
 */

/**
 * The tooltip of a thumbnail: its path and what a click does.
 * @param {Item} item
 * @returns {string}
 */
export function cellTitle(item) {
  return item.out
    ? `${item.path}: left out of the selection; click to take it back`
    : `${item.path}: click to leave it out of the selection`;
}

/**
 * The file name of a path ("a/b/c.jpg" -> "c.jpg").
 * @param {string} path
 * @returns {string}
 */
export function fileName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** @param {DataView | ArrayBuffer | Uint8Array} part */
function jpegUrl(part) {
  const bytes = part instanceof DataView
    ? new Uint8Array(part.buffer, part.byteOffset, part.byteLength)
    : part;
  return URL.createObjectURL(new Blob([/** @type {BlobPart} */ (bytes)], { type: "image/jpeg" }));
}

/** @param {{ model: any, el: HTMLElement }} context */
function render({ model, el }) {
  el.classList.add("imrec-umap-gallery");
  const grid = document.createElement("div");
  grid.className = "imrec-umap-cells";
  el.replaceChildren(grid);

  /** @type {string[]} */
  let urls = [];

  function draw() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    /** @type {Item[]} */
    const items = model.get("items") || [];
    /** @type {DataView[]} */
    const thumbs = model.get("thumbnails") || [];
    if (!items.length) {
      const hint = document.createElement("div");
      hint.className = "imrec-umap-hint";
      hint.textContent = model.get("hint") || "";
      grid.replaceChildren(hint);
      return;
    }
    grid.replaceChildren(
      ...items.map((item, i) => {
        const cell = document.createElement("button");
        cell.type = "button";
        cell.className = item.out ? "imrec-umap-cell imrec-umap-out" : "imrec-umap-cell";
        cell.dataset.id = String(item.id);
        cell.title = cellTitle(item);
        cell.setAttribute("aria-pressed", String(!item.out));
        const img = document.createElement("img");
        img.className = "imrec-umap-thumb";
        img.width = 64;
        img.height = 64;
        img.alt = fileName(item.path);
        img.title = item.path;
        const part = thumbs[i];
        if (part?.byteLength) {
          const url = jpegUrl(part);
          urls.push(url);
          img.src = url;
        }
        cell.append(img);
        cell.addEventListener("click", () => model.send({ event: "toggle", id: item.id }));
        return cell;
      }),
    );
  }

  draw();
  model.on("change:items", draw);
  model.on("change:thumbnails", draw);
  model.on("change:hint", draw);
  return () => {
    model.off("change:items", draw);
    model.off("change:thumbnails", draw);
    model.off("change:hint", draw);
    for (const url of urls) URL.revokeObjectURL(url);
  };
}

export default { render };
