// The dependency map (GET /flows/map) drawn with cytoscape.js: nodes per workload or label group,
// edges coloured by the worst outcome under the active version or the draft (dashed where the
// draft changes it). Clicking a node or an edge (or picking it from the keyboard-reachable list
// beside the graph) shows its flows and the explained verdict.
import * as api from "./api.js";
import { append, SINCE, badge, clear, datalist, field, h, heading, labelChips, select } from "./dom.js";
import * as labelFilter from "./labelfilter.js";
import { explain, explainRow, flowRows, portText } from "./verdicts.js";

const STYLE = [
  { selector: "node", style: { label: "data(label)", "background-color": "#4a6fa5", color: "#1d2733", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4, width: 26, height: 26 } },
  { selector: 'node[kind = "external"]', style: { shape: "diamond", "background-color": "#8a6d3b" } },
  { selector: 'node[kind = "ipList"]', style: { shape: "round-rectangle", "background-color": "#6b7f3a" } },
  { selector: 'node[kind = "unmanaged"]', style: { shape: "hexagon", "background-color": "#7a5c8e" } },
  { selector: "node.cluster", style: { "background-color": "#e8eef6", "background-opacity": 0.6, "border-color": "#9fb3cc", "border-width": 1, "text-valign": "top", "text-margin-y": -4, "font-weight": "bold" } },
  { selector: "edge", style: { width: "data(width)", "curve-style": "bezier", "target-arrow-shape": "triangle", "line-color": "#888", "target-arrow-color": "#888", "arrow-scale": 1.1 } },
  { selector: "edge.allowed", style: { "line-color": "#2e7d32", "target-arrow-color": "#2e7d32" } },
  { selector: "edge.would-block", style: { "line-color": "#d08800", "target-arrow-color": "#d08800" } },
  { selector: "edge.blocked", style: { "line-color": "#c62828", "target-arrow-color": "#c62828" } },
  { selector: "edge.changed", style: { "line-style": "dashed" } },
  { selector: ":selected", style: { "overlay-color": "#1a73e8", "overlay-opacity": 0.25, "overlay-padding": 6 } },
];

export async function render(root, ctx) {
  const keys = Object.keys(await api.get("/labels"));
  const params = ctx.params;
  const form = h(
    "form",
    { class: "controls" },
    field("Group by", h("input", { name: "groupBy", list: "map-keys", value: params.get("groupBy") ?? "app,role", placeholder: "label keys, e.g. app,role" }), "empty: one node per workload"),
    field("Within", h("input", { name: "within", list: "map-keys", value: params.get("within") ?? "env", placeholder: "e.g. env" })),
    field("Time", select("since", SINCE, params.get("since") ?? "7d")),
    field("Labels", h("input", { name: "labels", value: params.get("labels") ?? "", placeholder: "e.g. env=prod,role!=db" }), "keeps matching nodes and their peers"),
    field("Colour by", select("policy", [["active", "active version"], ["draft", "draft"]], params.get("policy") ?? "active")),
    h("button", { type: "submit" }, "Show"),
    datalist("map-keys", keys),
  );
  const graph = h("div", { id: "cy", class: "graph", role: "img", "aria-label": "Dependency map" });
  const lists = h("div", { class: "map-lists" });
  const details = h("aside", { class: "details", "aria-live": "polite" }, h("p", { class: "muted" }, "Click a node or an edge, or pick one from the list, to see its flows and why they are allowed or blocked."));
  append(root, 
    heading("Map"),
    form,
    legend(),
    h("div", { class: "map-layout" }, h("div", { class: "map-main" }, graph, lists), details),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    ctx.navigate("map", data);
  });
  const filters = Object.fromEntries(new FormData(form));
  const found = await api.get("/flows/map", { groupBy: filters.groupBy, within: filters.within, since: filters.since });
  const kept = labelFilter.apply(found, labelFilter.parse(filters.labels));
  if (!graph.isConnected) return; // the user moved on while the map loaded; cytoscape needs a live container
  draw(graph, lists, details, kept, filters, ctx);
}

function legend() {
  const item = (cls, text) => h("span", { class: "legend-item" }, h("span", { class: `swatch ${cls}` }), text);
  return h(
    "p",
    { class: "legend" },
    item("allowed", "allowed"),
    item("would-block", "would be blocked (alert mode)"),
    item("blocked", "blocked"),
    item("changed", "dashed: the draft changes the outcome"),
  );
}

function draw(graph, lists, details, found, filters, ctx) {
  const byId = new Map(found.nodes.map((n) => [n.id, n]));
  const clusters = [...new Set(found.nodes.map((n) => n.cluster).filter(Boolean))];
  const elements = [
    ...clusters.map((c) => ({ group: "nodes", data: { id: `cluster:${c}`, label: c }, classes: "cluster" })),
    ...found.nodes.map((n) => ({
      group: "nodes",
      data: { id: n.id, label: n.label, kind: n.kind, ...(n.cluster ? { parent: `cluster:${n.cluster}` } : {}) },
    })),
    ...found.edges.map((e, i) => ({
      group: "edges",
      data: { id: `edge-${i}`, source: e.source, target: e.destination, width: 1.5 + Math.min(5, Math.log10(1 + e.connections) * 2) },
      classes: edgeClasses(e, filters.policy),
    })),
  ];
  if (typeof window.cytoscape !== "function") throw new Error("cytoscape.js did not load");
  const cy = window.cytoscape({ container: graph, elements, style: STYLE });
  const layout = cy.layout({ name: "cose", animate: false, padding: 20, randomize: false });
  layout.one("layoutstop", () => arrange(cy));
  layout.run();
  // Kept on the element so tests (and a curious operator's devtools) can read the live graph.
  graph.cy = cy;
  graph.dataset.nodes = String(found.nodes.length);
  graph.dataset.edges = String(found.edges.length);
  const show = (what) => {
    cy.elements().unselect();
    if (what.edge !== undefined) {
      cy.getElementById(`edge-${what.edge}`).select();
      showEdge(details, found.edges[what.edge], byId, filters, ctx);
    } else {
      cy.getElementById(what.node).select();
      showNode(details, byId.get(what.node), byId, filters, ctx);
    }
  };
  cy.on("tap", "edge", (event) => show({ edge: Number(event.target.id().slice(5)) }));
  cy.on("tap", "node", (event) => {
    if (byId.has(event.target.id())) show({ node: event.target.id() });
  });
  append(clear(lists), 
    h("h2", {}, `Connections (${found.edges.length})`),
    found.edges.length
      ? h(
          "ul",
          { class: "pick-list" },
          found.edges.map((e, i) =>
            h(
              "li",
              {},
              h(
                "button",
                { type: "button", class: "link", dataset: { edge: String(i) }, onclick: () => show({ edge: i }) },
                `${name(byId, e.source)} → ${name(byId, e.destination)}`,
              ),
              " ",
              e.ports.map((p) => portText(p.port, p.protocol)).join(", "),
              " ",
              badge(filters.policy === "draft" ? e.draftVerdict ?? e.verdict : e.verdict),
            ),
          ),
        )
      : h("p", { class: "empty" }, "No flows in this window."),
    h("h2", {}, `Nodes (${found.nodes.length})`),
    h(
      "ul",
      { class: "pick-list inline" },
      found.nodes.map((n) => h("li", {}, h("button", { type: "button", class: "link", dataset: { node: n.id }, onclick: () => show({ node: n.id }) }, name(byId, n.id)))),
    ),
  );
}

/**
 * cose lays out compound nodes well inside but lets clusters overlap; place the blocks (each
 * cluster, and the nodes outside any cluster) side by side in rows instead, keeping cose's
 * arrangement within each.
 */
function arrange(cy) {
  const blocks = cy.nodes(".cluster").map((c) => c.children());
  const loose = cy.nodes().filter((n) => !n.isParent() && !n.isChild());
  if (loose.length) blocks.push(loose);
  if (blocks.length < 2) return cy.fit(undefined, 20);
  const gap = 60;
  const area = blocks.reduce((sum, b) => sum + b.boundingBox().w * b.boundingBox().h, 0);
  const aspect = cy.width() / Math.max(1, cy.height());
  const rowWidth = Math.max(Math.sqrt(area * aspect) * 2, ...blocks.map((b) => b.boundingBox().w));
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  for (const block of blocks) {
    const box = block.boundingBox();
    if (x > 0 && x + box.w > rowWidth) {
      x = 0;
      y += rowHeight + gap;
      rowHeight = 0;
    }
    block.shift({ x: x - box.x1, y: y - box.y1 });
    x += box.w + gap;
    rowHeight = Math.max(rowHeight, box.h);
  }
  cy.fit(undefined, 20);
}

function edgeClasses(edge, policy) {
  const verdict = policy === "draft" && edge.draftVerdict ? edge.draftVerdict : edge.verdict;
  const changed = edge.draftVerdict && edge.draftVerdict !== edge.verdict ? " changed" : "";
  return verdict + changed;
}

function name(byId, id) {
  const node = byId.get(id);
  return node ? (node.cluster ? `${node.cluster} ${node.label}` : node.label) : id;
}

async function showEdge(details, edge, byId, filters, ctx) {
  const source = byId.get(edge.source);
  const target = byId.get(edge.destination);
  const explanations = h("div", {}, h("p", { class: "muted" }, "Explaining…"));
  const flowBox = h("div", {}, h("p", { class: "muted" }, "Loading flows…"));
  append(clear(details), 
    h("h2", {}, `${name(byId, edge.source)} → ${name(byId, edge.destination)}`),
    h("p", {}, "Active version: ", badge(edge.verdict), edge.draftVerdict ? [" · draft: ", badge(edge.draftVerdict)] : null, ` · ${edge.connections} connections`),
    portsTable(edge),
    h("h3", {}, "Why"),
    explanations,
    h("h3", {}, "Flows"),
    flowBox,
  );
  const from = source.members[0];
  const to = target.members[0];
  const probes = edge.ports.filter((p) => p.port !== null || p.protocol === "icmp").slice(0, 4);
  const parts = [];
  for (const p of probes) parts.push(await explain(from, to, portText(p.port, p.protocol)));
  const note = source.members.length > 1 || target.members.length > 1 ? h("p", { class: "muted" }, `For the members ${from} and ${to}; every member of a group has the group's labels.`) : null;
  explanations.replaceChildren(note ?? "", ...parts);
  const rows = (await touching(source, filters.since)).filter((r) => isIn(target, r.dstWorkload, r.dst) && isIn(source, r.srcWorkload, r.src));
  flowBox.replaceChildren(flowsWithExplain(rows, ctx));
}

function portsTable(edge) {
  const counts = (c) => (c ? `${c.allowed} allowed, ${c["would-block"]} would-block, ${c.blocked} blocked` : "");
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ["port", "serving process", "conns", "active", "draft"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      edge.ports.map((p) =>
        h("tr", {}, h("td", {}, portText(p.port, p.protocol)), h("td", {}, p.processes.join(", ")), h("td", { class: "num" }, p.connections), h("td", {}, counts(p.active)), h("td", {}, counts(p.draft))),
      ),
    ),
  );
}

async function showNode(details, node, byId, filters, ctx) {
  const flowBox = h("div", {}, h("p", { class: "muted" }, "Loading flows…"));
  append(clear(details), 
    h("h2", {}, name(byId, node.id)),
    h("p", {}, `${node.kind} · `, labelChips(node.labels)),
    h("p", {}, h("strong", {}, "Members: "), node.members.join(", ") || "none"),
    h("h3", {}, "Flows"),
    flowBox,
  );
  flowBox.replaceChildren(flowsWithExplain(await touching(node, filters.since), ctx));
}

function flowsWithExplain(rows, ctx) {
  const why = h("div", { class: "row-explain" });
  const showWhy = async (row) => {
    why.replaceChildren(h("p", { class: "muted" }, "Explaining…"));
    try {
      why.replaceChildren(await explainRow(row));
    } catch (error) {
      ctx.failed(error);
    }
  };
  return h("div", {}, flowRows(rows.slice(0, 100), showWhy), why);
}

function isIn(node, workload, address) {
  return node.members.includes(workload) || node.members.includes(address);
}

/** Flow summary rows with either end in the node. */
async function touching(node, since) {
  const rows = [];
  if (node.kind === "group") {
    const selector = Object.entries(node.labels).map(([k, v]) => `${k}=${v}`).join(",");
    rows.push(...(await api.get("/flows/summary", { selector, since, limit: 2000 })).items);
  } else {
    for (const member of node.members.slice(0, 5)) {
      rows.push(...(await api.get("/flows/summary", { src: member, since, limit: 1000 })).items);
      rows.push(...(await api.get("/flows/summary", { dst: member, since, limit: 1000 })).items);
    }
  }
  const seen = new Set();
  return rows.filter((r) => {
    const key = JSON.stringify([r.bucket, r.reporter, r.direction, r.src, r.dst, r.dport, r.proto, r.process, r.verdict, r.rule]);
    if (seen.has(key) || !(isIn(node, r.srcWorkload, r.src) || isIn(node, r.dstWorkload, r.dst))) return false;
    seen.add(key);
    return true;
  });
}
