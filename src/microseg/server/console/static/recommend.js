// Recommendations: least-privilege allow rules learnt from the recorded flows (never from flows
// that were blocked), with their coverage; an editor accepts them into the draft, all or nothing,
// and reviews them in the diff before provisioning.
import * as api from "./api.js";
import { append, SINCE, badge, field, h, select } from "./dom.js";
import { peersText, servicesText } from "./ruleeditor.js";

export async function render(body, ctx) {
  const groupBy = ctx.params.get("groupBy") ?? "env,role";
  const since = ctx.params.get("since") ?? "7d";
  const keys = Object.keys(await api.get("/labels"));
  const input = h("input", { name: "groupBy", value: groupBy, required: true, list: "rec-keys", placeholder: "label keys, e.g. env,role" });
  const form = h(
    "form",
    { class: "controls" },
    field("Group by", input, "the rules select these label keys"),
    field("Learn from", select("since", SINCE, since)),
    h("button", { type: "submit" }, "Recommend"),
    h("datalist", { id: "rec-keys" }, keys.map((k) => h("option", { value: k }))),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate("policy", { tab: "recommend", groupBy: input.value.trim(), since: form.elements.since.value });
  });
  append(body, form);
  const found = await api.get("/flows/recommend", { groupBy, since });
  const rules = found.documents.filter((d) => d.kind === "Policy").flatMap((d) => d.spec.rules.map((r) => ({ tier: d.spec.tier, ...r })));
  const others = found.documents.filter((d) => d.kind !== "Policy");
  append(body, 
    h("p", { class: "summary" }, `Coverage with these rules: ${found.coverage} % of ${found.flows} flows (${found.connectionCoverage} % of connections).`),
    rules.length
      ? h(
          "table",
          { class: "recommended" },
          h("thead", {}, h("tr", {}, ["tier", "prio", "name", "from", "to", "services", "reason"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rules.map((r) => h("tr", {}, h("td", {}, r.tier), h("td", { class: "num" }, r.priority), h("th", { scope: "row" }, r.name), h("td", {}, peersText(r.from)), h("td", {}, peersText(r.to)), h("td", {}, servicesText(r.services)), h("td", {}, r.reason || "")))),
        )
      : h("p", { class: "empty" }, "Nothing to recommend: the draft already covers what was learnt from."),
    others.length ? h("p", { class: "muted" }, `Also written: ${others.map((d) => `${d.kind}/${d.metadata.name}`).join(", ")}`) : null,
    ctx.canEdit && found.documents.length ? acceptButton(groupBy, since, ctx) : null,
    found.leftOut.length
      ? [h("h2", {}, "Left out"), h("ul", { class: "left-out" }, found.leftOut.map((l) => h("li", {}, badge("left out", "would-block"), ` ${l.flow} (${l.connections} connections): ${l.reason}`)))]
      : null,
  );
}

function acceptButton(groupBy, since, ctx) {
  const button = h("button", { type: "button", class: "primary" }, "Accept into the draft");
  button.addEventListener("click", async () => {
    try {
      const done = await api.post("/flows/recommend/accept", undefined, { groupBy, since });
      ctx.toast(`${done.applied.length} object(s) written into the draft; review them under "Draft vs active"`);
      ctx.navigate("policy", { tab: "diff" });
    } catch (error) {
      ctx.failed(error);
    }
  });
  return button;
}
