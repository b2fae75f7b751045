// Policy: tiers and the draft's rules (edit, add, delete), recommendations to accept into the
// draft, the draft-vs-active diff with the simulation over recorded flows, provisioning with a
// note, and version history with rollback. Tabs keep each part on one screen at 1280x800; the
// tab is in the URL (#/policy?tab=diff) so a reload or a link lands on the same part.
import * as api from "./api.js";
import { append, badge, clear, h, heading } from "./dom.js";
import * as diff from "./diff.js";
import * as recommend from "./recommend.js";
import * as ruleEditor from "./ruleeditor.js";
import * as versions from "./versions.js";

const TABS = [
  ["rules", "Tiers and rules"],
  ["diff", "Draft vs active"],
  ["recommend", "Recommendations"],
  ["versions", "Versions"],
];
const BUILTIN_TIERS = [
  { name: "quarantine", order: 100, description: "Isolates workloads labelled quarantine=true (managed by microseg)" },
  { name: "security", order: 200, description: "Organisation-wide guard rails that application rules cannot override" },
  { name: "application", order: 300, description: "Least-privilege allow rules per application" },
];

export async function render(root, ctx) {
  const tab = TABS.some(([name]) => name === ctx.params.get("tab")) ? ctx.params.get("tab") : "rules";
  const body = h("div", { class: "tab-body" });
  const tabs = h(
    "div",
    { class: "tabs", role: "group", "aria-label": "Policy sections" },
    TABS.map(([name, title]) =>
      h("button", { type: "button", class: "tab", "aria-pressed": String(name === tab), dataset: { tab: name }, onclick: () => ctx.navigate("policy", { tab: name }) }, title),
    ),
  );
  append(root, heading("Policy"), tabs, body);
  const reload = () => render(clear(root), ctx).catch(ctx.failed);
  if (tab === "rules") await rules(body, ctx, reload);
  else if (tab === "diff") await diff.render(body, ctx, reload);
  else if (tab === "recommend") await recommend.render(body, ctx);
  else await versions.render(body, ctx, reload);
}

export async function tiers() {
  const declared = (await api.get("/tiers")).items.map((t) => ({ name: t.metadata.name, order: t.spec.order, description: t.spec.description || "" }));
  const names = new Set(declared.map((t) => t.name));
  return [...declared, ...BUILTIN_TIERS.filter((t) => !names.has(t.name))].sort((a, b) => a.order - b.order);
}

async function rules(body, ctx, reload) {
  const [tierList, found, services, labels, changes] = await Promise.all([
    tiers(),
    api.get("/rules", { limit: 10000 }),
    api.get("/services", { limit: 10000 }),
    api.get("/labels"),
    api.get("/draft/diff"),
  ]);
  const inDraft = new Map([
    ...changes.rules.added.map((r) => [r, "added in draft"]),
    ...changes.rules.changed.map((r) => [r, "changed in draft"]),
  ]);
  const editorBox = h("div", { class: "editor-box" });
  const options = { tiers: tierList, services: services.items.map((s) => s.metadata.name), labels };
  const edit = (rule) => ruleEditor.open(editorBox, rule, options, ctx, reload);
  append(body, 
    changes.rules.removed.length ? h("p", { class: "note" }, `Removed in the draft: ${changes.rules.removed.join(", ")}`) : null,
    ctx.canEdit ? h("p", {}, h("button", { type: "button", class: "primary", onclick: () => edit(null) }, "New rule")) : null,
    editorBox,
  );
  for (const tier of tierList) {
    const mine = found.items.filter((r) => r.spec.tier === tier.name).sort((a, b) => a.spec.priority - b.spec.priority);
    append(body, 
      h("h2", {}, `${tier.order} · ${tier.name}`),
      h("p", { class: "muted" }, tier.description, tier.name === "quarantine" ? " Its rules are made by microseg for workloads in quarantine." : ""),
      mine.length ? ruleTable(mine, inDraft, ctx, edit, reload) : h("p", { class: "empty" }, "No rules in this tier."),
    );
  }
  append(body, h("h2", {}, "default"), h("p", { class: "muted" }, "Whatever no tier decided is denied."));
}

function ruleTable(rules, inDraft, ctx, edit, reload) {
  const heads = ["prio", "name", "action", "from", "to", "services", "owner / reason", ""];
  return h(
    "table",
    { class: "rules" },
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rules.map((r) => {
        const ref = `${r.spec.tier}/${r.metadata.name}`;
        return h(
          "tr",
          { dataset: { rule: ref } },
          h("td", { class: "num" }, r.spec.priority),
          h("th", { scope: "row" }, r.metadata.name, inDraft.has(ref) ? [" ", badge(inDraft.get(ref), "draft")] : null, r.spec.enabled === false ? [" ", badge("disabled")] : null),
          h("td", {}, badge(r.spec.action)),
          h("td", {}, ruleEditor.peersText(r.spec.from)),
          h("td", {}, ruleEditor.peersText(r.spec.to)),
          h("td", {}, ruleEditor.servicesText(r.spec.services)),
          h("td", {}, r.spec.owner ? h("div", {}, r.spec.owner) : null, r.spec.reason ? h("div", { class: "muted" }, r.spec.reason) : null),
          h("td", { class: "actions" }, ctx.canEdit ? [h("button", { type: "button", class: "small", onclick: () => edit(r) }, "Edit"), " ", deleteButton(ref, ctx, reload)] : null),
        );
      }),
    ),
  );
}

/** Two steps, so a stray Enter or click never deletes a rule. */
function deleteButton(ref, ctx, reload) {
  const button = h("button", { type: "button", class: "small danger" }, "Delete");
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "yes") {
      button.dataset.armed = "yes";
      button.textContent = "Confirm delete";
      return;
    }
    try {
      await api.del(`/rules/${ref.split("/").map(encodeURIComponent).join("/")}`);
      ctx.toast(`${ref} deleted in the draft`);
      reload();
    } catch (error) {
      ctx.failed(error);
    }
  });
  return button;
}
