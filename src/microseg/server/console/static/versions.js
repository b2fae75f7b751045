// Provisioned versions, newest first: who provisioned what and why, a diff of any version against
// the active one, and rollback (which provisions the old content as a new version with a note).
import * as api from "./api.js";
import { append, h, when } from "./dom.js";
import { renderDiff } from "./diff.js";

export async function render(body, ctx, reload) {
  const found = (await api.get("/versions", { limit: 1000 })).items;
  const compared = h("div", { class: "compared" });
  const active = found.length ? found[0].number : null;
  append(body, 
    h("p", {}, active === null ? "Nothing is provisioned yet." : `Active version: ${active}`),
    found.length
      ? h(
          "table",
          { class: "versions" },
          h("thead", {}, h("tr", {}, ["version", "note", "provisioned", "by", "changes", ""].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, found.map((v) => row(v, active, compared, ctx, reload))),
        )
      : null,
    compared,
  );
}

function row(v, active, compared, ctx, reload) {
  const c = v.changes || { added: [], removed: [], changed: [] };
  const actions = h("td", { class: "actions" });
  if (v.number !== active) {
    actions.append(h("button", { type: "button", class: "small", onclick: () => compare(v.number, compared, ctx) }, "Diff to active"));
    if (ctx.canEdit) actions.append(" ", rollbackForm(v, ctx, reload));
  }
  return h(
    "tr",
    { dataset: { version: String(v.number) } },
    h("th", { scope: "row" }, String(v.number), v.rollbackOf ? h("div", { class: "muted" }, `rollback of ${v.rollbackOf}`) : null),
    h("td", {}, v.note),
    h("td", {}, when(v.createdAt)),
    h("td", {}, v.createdBy),
    h("td", {}, `+${c.added.length} −${c.removed.length} ~${c.changed.length}`),
    actions,
  );
}

async function compare(number, compared, ctx) {
  try {
    compared.replaceChildren(renderDiff(await api.get("/diff", { from: String(number), to: "active" })));
    compared.querySelector("h2").setAttribute("tabindex", "-1");
    compared.querySelector("h2").focus();
  } catch (error) {
    ctx.failed(error);
  }
}

function rollbackForm(v, ctx, reload) {
  const note = h("input", { name: "note", required: true, size: 24, placeholder: "why roll back", "aria-label": `Note for rolling back to ${v.number}` });
  const form = h("form", { class: "inline" }, note, h("button", { type: "submit", class: "small danger" }, `Roll back to ${v.number}`));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await api.post(`/versions/${v.number}/rollback`, { note: note.value.trim() });
      ctx.toast(`Version ${made.number} provisioned: the content of version ${v.number}`);
      reload();
    } catch (error) {
      ctx.failed(error);
    }
  });
  return form;
}
