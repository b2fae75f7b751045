// Explained verdicts, shared by the map and the flows explorer: the one evaluator on the server
// decides; this only asks it (POST /explain) and shows tier, rule, labels and modes.
import * as api from "./api.js";
import { badge, h } from "./dom.js";

export function portText(port, proto) {
  return port === null || port === undefined ? proto : `${port}/${proto}`;
}

/** The verdicts under the active version and the draft, as a definition list each. */
export async function explain(from, to, port) {
  const box = h("div", { class: "explain" }, h("p", { class: "muted" }, `Explaining ${from} → ${to} on ${port}…`));
  const shown = [];
  for (const version of ["active", "draft"]) {
    try {
      const found = await api.post("/explain", { from, to, port, version });
      shown.push(verdictBlock(version, found));
    } catch (error) {
      shown.push(h("div", { class: "verdict" }, h("h4", {}, version), h("p", { class: "error" }, error.message)));
    }
  }
  box.replaceChildren(h("p", {}, `${from} → ${to} on ${port}`), h("div", { class: "verdicts" }, shown));
  return box;
}

function verdictBlock(version, found) {
  const v = found.verdict;
  const row = (term, ...value) => [h("dt", {}, term), h("dd", {}, ...value)];
  return h(
    "div",
    { class: "verdict", dataset: { version, outcome: v.outcome } },
    h("h4", {}, version === "active" ? "Active version" : "Draft"),
    h(
      "dl",
      {},
      row("outcome", badge(v.outcome), ` (policy says ${v.decision})`),
      row("tier", v.tier ?? "(none: default deny)"),
      row("rule", v.rule ?? "(none)"),
      row("because", v.reason),
      row("matched", matched(v)),
      row("modes", `source ${v.sourceMode}, destination ${v.destinationMode}`),
      v.notes && v.notes.length ? row("notes", v.notes.join("; ")) : null,
    ),
  );
}

function matched(v) {
  const parts = [];
  if (v.sourceLabelsMatched.length) parts.push(`source ${v.sourceLabelsMatched.join(",")}`);
  if (v.destinationLabelsMatched.length) parts.push(`destination ${v.destinationLabelsMatched.join(",")}`);
  return parts.length ? parts.join("; ") : "(no labels)";
}

/** A table of flow summary rows; `onExplain(row)` adds an Explain button per row. */
export function flowRows(rows, onExplain) {
  const end = (workload, address) => (workload ? `${workload} (${address})` : address);
  const body = rows.map((r) =>
    h(
      "tr",
      {},
      h("td", {}, new Date(r.lastSeen * 1000).toISOString().slice(0, 16).replace("T", " ")),
      h("td", {}, r.reporter),
      h("td", {}, end(r.srcWorkload, r.src)),
      h("td", {}, end(r.dstWorkload, r.dst)),
      h("td", {}, portText(r.dport, r.proto)),
      h("td", {}, r.process ?? ""),
      h("td", {}, badge(r.verdict)),
      h("td", {}, r.rule ?? ""),
      h("td", { class: "num" }, r.connections),
      h("td", {}, onExplain ? h("button", { type: "button", class: "small", onclick: () => onExplain(r) }, "Explain") : null),
    ),
  );
  if (!rows.length) return h("p", { class: "empty" }, "No flows in this window.");
  const heads = ["last seen", "reporter", "source", "destination", "port", "process", "verdict", "rule", "conns", ""];
  return h(
    "table",
    { class: "flows" },
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, body),
  );
}

/** Explain one flow summary row between its two ends, as the agents saw it. */
export function explainRow(row) {
  if (row.proto !== "icmp" && (row.dport === null || row.dport === undefined)) {
    return Promise.resolve(h("p", { class: "muted" }, "This protocol has no port to explain."));
  }
  return explain(row.srcWorkload || row.src, row.dstWorkload || row.dst, portText(row.dport, row.proto));
}
