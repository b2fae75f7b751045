// Workloads: filter by a kubectl-style selector on effective labels, edit a workload's own labels
// (POST /labels/bulk with what was added and removed), set its mode, quarantine and release it,
// and read its agent's state. Label rules add labels too; those show but are edited as rules.
import * as api from "./api.js";
import { append, badge, clear, datalist, field, h, heading, labelChips, select } from "./dom.js";

const MODES = ["visibility", "alert", "enforce"];

export async function render(root, ctx) {
  const selector = ctx.params.get("selector") ?? "";
  const [labels, agents] = await Promise.all([api.get("/labels"), api.get("/agents")]);
  const pairs = Object.entries(labels).flatMap(([k, vs]) => vs.map((v) => `${k}=${v}`));
  const input = h("input", { name: "selector", value: selector, list: "wl-pairs", size: 40, placeholder: "e.g. env=prod,role in (web,app)" });
  const form = h("form", { class: "controls" }, field("Selector", input, "kubectl -l syntax on effective labels"), h("button", { type: "submit" }, "Filter"), datalist("wl-pairs", pairs));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate("workloads", { selector: input.value.trim() });
  });
  const list = h("div", {});
  append(root, heading("Workloads"), form, list);
  const found = await api.get("/workloads", { selector, limit: 10000 });
  const agentOf = new Map(agents.items.map((a) => [a.workload, a]));
  const reload = () => render(clear(root), ctx).catch(ctx.failed);
  list.append(
    h("p", { class: "count" }, `${found.items.length} workload(s)`),
    h(
      "table",
      { class: "workloads" },
      h("thead", {}, h("tr", {}, ["name", "kind", "addresses", "labels", "mode", "agent", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, found.items.map((w) => row(w, agentOf.get(w.metadata.name), labels, ctx, reload))),
    ),
  );
}

function row(w, agent, labels, ctx, reload) {
  const name = w.metadata.name;
  const st = w.status;
  const own = w.metadata.labels || {};
  const derived = Object.fromEntries(Object.entries(st.effectiveLabels || {}).filter(([k, v]) => own[k] !== v));
  const editor = h("div", { class: "label-editor", hidden: true });
  const actions = [];
  if (ctx.canEdit) {
    actions.push(
      h("button", { type: "button", class: "small", onclick: () => toggleEditor(editor, name, own, labels, ctx, reload) }, "Edit labels"),
      st.quarantined
        ? h("button", { type: "button", class: "small", onclick: () => act(ctx, `/workloads/${encodeURIComponent(name)}/release`, `${name} released`, reload) }, "Release")
        : h("button", { type: "button", class: "small danger", onclick: () => act(ctx, `/workloads/${encodeURIComponent(name)}/quarantine`, `${name} quarantined`, reload) }, "Quarantine"),
    );
  }
  return h(
    "tr",
    { dataset: { workload: name } },
    h("th", { scope: "row" }, name, st.quarantined ? [" ", badge("quarantined")] : null),
    h("td", {}, w.spec.kind),
    h("td", {}, (w.spec.addresses || []).join(", ")),
    h("td", {}, labelChips(own), Object.keys(derived).length ? h("div", { class: "muted" }, "from label rules: ", labelChips(derived)) : null, editor),
    h("td", {}, modeCell(w, ctx, reload)),
    h("td", {}, agentCell(st.agent, agent)),
    h("td", { class: "actions" }, actions),
  );
}

function modeCell(w, ctx, reload) {
  const st = w.status;
  const from = st.modeFrom === "workload" ? "" : ` (from ${st.modeFrom})`;
  if (!ctx.canEdit) return [badge(st.mode), from];
  const choice = select("mode", MODES, w.spec.mode || "visibility");
  choice.setAttribute("aria-label", `Mode of ${w.metadata.name}`);
  const form = h("form", { class: "inline" }, choice, h("button", { type: "submit", class: "small" }, "Set"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.put(`/workloads/${encodeURIComponent(w.metadata.name)}/mode`, { mode: choice.value });
      ctx.toast(`${w.metadata.name}: mode ${choice.value}`);
      reload();
    } catch (error) {
      ctx.failed(error);
    }
  });
  return [form, h("div", { class: "muted" }, `effective ${st.mode}${from}`)];
}

function agentCell(state, agent) {
  const parts = [badge(state)];
  if (agent && !agent.online) parts.push(" ", badge("offline"));
  if (agent && agent.errors.length) parts.push(h("div", { class: "error" }, agent.errors.join("; ")));
  if (agent) parts.push(h("div", { class: "muted" }, `seen ${Math.round(agent.silentFor)} s ago`));
  return parts;
}

async function act(ctx, path, done, reload) {
  try {
    await api.post(path);
    ctx.toast(done);
    reload();
  } catch (error) {
    ctx.failed(error);
  }
}

/** The label picker: one key/value row per label, keys and values offered from those in use. */
function toggleEditor(box, name, own, labels, ctx, reload) {
  if (!box.hidden) {
    box.hidden = true;
    return;
  }
  const rows = h("div", { class: "label-rows" });
  const keyList = `keys-${name}`;
  const addRow = (key = "", value = "") => {
    const k = h("input", { name: "key", value: key, list: keyList, "aria-label": "label key", size: 10 });
    const v = h("input", { name: "value", value, "aria-label": "label value", size: 12 });
    const refreshValues = () => {
      const id = `vals-${name}-${k.value}`;
      if (!document.getElementById(id)) box.append(datalist(id, labels[k.value] || []));
      v.setAttribute("list", id);
    };
    k.addEventListener("change", refreshValues);
    refreshValues();
    const line = h("div", { class: "label-row" }, k, "=", v, h("button", { type: "button", class: "small", "aria-label": `remove label ${key}`, onclick: () => line.remove() }, "×"));
    rows.append(line);
    return k;
  };
  for (const [k, v] of Object.entries(own)) addRow(k, v);
  const form = h(
    "form",
    { class: "labels-form", "aria-label": `Labels of ${name}` },
    rows,
    h("button", { type: "button", class: "small", onclick: () => addRow().focus() }, "Add label"),
    " ",
    h("button", { type: "submit", class: "small primary" }, "Save labels"),
    datalist(keyList, Object.keys(labels)),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const wanted = {};
    for (const line of rows.querySelectorAll(".label-row")) {
      const [k, v] = line.querySelectorAll("input");
      if (k.value.trim()) wanted[k.value.trim()] = v.value.trim();
    }
    const add = Object.fromEntries(Object.entries(wanted).filter(([k, v]) => own[k] !== v));
    const remove = Object.keys(own).filter((k) => !(k in wanted));
    if (!Object.keys(add).length && !remove.length) {
      ctx.toast("No label changed.");
      return;
    }
    try {
      await api.post("/labels/bulk", { workloads: [name], add, remove });
      ctx.toast(`${name}: labels saved`);
      reload();
    } catch (error) {
      ctx.failed(error);
    }
  });
  append(clear(box), form);
  box.hidden = false;
  (rows.querySelector("input") || form.querySelector("button")).focus();
}
