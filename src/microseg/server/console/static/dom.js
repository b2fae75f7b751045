// Building the DOM without HTML strings: every string becomes a text node, so names, labels and
// messages from the server can never turn into markup.

/**
 * h("a", {href: "#/map", class: "x", onclick: fn}, "text", child, [more])
 * Attributes named on* become listeners; `text` sets textContent; null and false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected" || key === "hidden") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  return append(el, ...children);
}

/** Like Element.append, but skips null/false and flattens arrays (DOM append prints "null"). */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function when(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

/** A coloured badge for a verdict, an agent state or a change ("blocked", "in sync", "lost"). */
export function badge(text, kind = text) {
  const css = String(kind || "none").toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return h("span", { class: `badge badge-${css}` }, text ?? "none");
}

/** A table of `rows` with `columns` = [[heading, row => cell content], ...]. */
export function table(columns, rows, { caption, empty = "Nothing to show.", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map(([, cell]) => h("td", {}, cell(row))))),
    ),
  );
}

/** A labelled form control. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", {}, hint) : null);
}

export function select(name, options, chosen) {
  return h(
    "select",
    { name },
    options.map((o) => {
      const [value, text] = Array.isArray(o) ? o : [o, o];
      return h("option", { value, selected: value === chosen }, text);
    }),
  );
}

export function datalist(id, values) {
  return h("datalist", { id }, values.map((v) => h("option", { value: v })));
}

export const SINCE = [["1h", "last hour"], ["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"], ["", "everything kept"]];

/** Labels as chips, `key=value`. */
export function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return h("span", { class: "muted" }, "no labels");
  return h("span", { class: "chips" }, entries.map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)));
}

/** Pretty JSON in a <pre> (textContent, never markup). */
export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** A heading that takes focus when a view opens, so keyboard and screen-reader users land on it. */
export function heading(text) {
  return h("h1", { tabindex: "-1", class: "view-title" }, text);
}
