// Events (tamper, blocked, would-block, agent offline or failed, quarantine and release) and the
// audit log. Both are append-only and listed oldest first by the API; the console reads them
// forward and shows the newest first.
import * as api from "./api.js";
import { append, badge, field, h, heading, json, select, when } from "./dom.js";

const KINDS = ["tamper", "blocked", "would-block", "agent-offline", "agent-failed", "quarantine", "release",
  "invariant-violation", "flow-forged", "enroll-refused", "enroll-adopted", "address-refused", "labels-changed"];
const SHOWN = 300;

export async function render(root, ctx) {
  const kind = ctx.params.get("kind") ?? "";
  const workload = ctx.params.get("workload") ?? "";
  const kinds = h("select", { name: "kind" });
  const form = h(
    "form",
    { class: "controls" },
    field("Kind", kinds),
    field("Workload", h("input", { name: "workload", value: workload, size: 20 })),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate("events", Object.fromEntries(new FormData(form)));
  });
  append(root, heading("Events"), form);
  const found = await api.allAfter("/events", { kind, workload });
  const rows = found.sort((a, b) => b.at - a.at).slice(0, SHOWN);
  // Kinds seen are offered too: new kinds of events need no console release to be filtered on.
  const offered = [...new Set([...KINDS, ...found.map((e) => e.kind), kind].filter(Boolean))];
  append(kinds, [...select("kind", [["", "all"], ...offered], kind).children]);
  kinds.value = kind;
  append(root, h("p", { class: "count" }, `${rows.length} shown, newest first`), eventTable(rows));
}

function eventTable(rows) {
  if (!rows.length) return h("p", { class: "empty" }, "No events.");
  return h(
    "table",
    { class: "events" },
    h("thead", {}, h("tr", {}, ["at", "kind", "workload", "message", "details"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rows.map((e) =>
        h(
          "tr",
          { dataset: { kind: e.kind } },
          h("td", {}, when(e.at)),
          h("td", {}, badge(e.kind)),
          h("td", {}, e.workload ?? ""),
          h("td", {}, e.message),
          h("td", {}, h("details", {}, h("summary", {}, "details"), json(e.details))),
        ),
      ),
    ),
  );
}

export async function renderAudit(root, ctx) {
  const target = ctx.params.get("target") ?? "";
  const actor = ctx.params.get("actor") ?? "";
  const form = h(
    "form",
    { class: "controls" },
    field("Target starts with", h("input", { name: "target", value: target, size: 24, placeholder: "e.g. Workload/ or Rule/application/" })),
    field("Actor", h("input", { name: "actor", value: actor, size: 30, placeholder: "e.g. token:ops(1a2b3c)" })),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate("audit", Object.fromEntries(new FormData(form)));
  });
  append(root, heading("Audit log"), form);
  const found = (await api.allAfter("/audit", { target, actor })).reverse().slice(0, SHOWN);
  append(root, 
    h("p", { class: "count" }, `${found.length} shown, newest first`),
    found.length
      ? h(
          "table",
          { class: "audit" },
          h("thead", {}, h("tr", {}, ["#", "at", "actor", "action", "target", "details"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            found.map((a) =>
              h("tr", { dataset: { action: a.action } }, h("td", { class: "num" }, a.id), h("td", {}, when(a.at)), h("td", {}, a.actor), h("td", {}, badge(a.action, "action")), h("td", {}, a.target), h("td", {}, h("details", {}, h("summary", {}, "details"), json(a.details)))),
            ),
          ),
        )
      : h("p", { class: "empty" }, "Nothing recorded."),
  );
}
