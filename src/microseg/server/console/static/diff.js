// Draft against the active version: which objects and rules change, which workload pairs gain or
// lose access (each with both explained verdicts), and the recorded flows replayed against the
// draft (GET /flows/simulate). Provisioning needs a note; it is refused when nothing changed, so
// the button is only offered when the diff is not empty.
import * as api from "./api.js";
import { append, SINCE, badge, field, h, select } from "./dom.js";

const CHANGES = ["newly-blocked", "newly-would-block", "newly-allowed", "unchanged"];

export async function render(body, ctx, reload) {
  const since = ctx.params.get("since") ?? "30d";
  const [found, simulation] = await Promise.all([api.get("/draft/diff"), api.get("/flows/simulate", { since })]);
  const empty = isEmpty(found);
  const sinceForm = h("form", { class: "controls" }, field("Replay flows of", select("since", SINCE, since)), h("button", { type: "submit" }, "Simulate"));
  sinceForm.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate("policy", { tab: "diff", since: sinceForm.elements.since.value });
  });
  append(body, 
    h("p", { class: "summary", dataset: { empty: String(empty) } }, empty ? "The draft is the active version: nothing to provision." : summaryText(found)),
    ctx.canEdit && !empty ? provisionForm(ctx, reload) : null,
    renderDiff(found),
    h("h2", {}, "Simulation over recorded flows"),
    sinceForm,
    simulationView(simulation),
  );
}

export function isEmpty(found) {
  return ["added", "removed", "changed"].every((k) => !found.objects[k].length);
}

function summaryText(found) {
  const o = found.objects;
  const r = found.reachability;
  return `${o.added.length} added, ${o.removed.length} removed, ${o.changed.length} changed; workload pairs: ${r.gained} gain access, ${r.lost} lose it.`;
}

function provisionForm(ctx, reload) {
  const note = h("input", { name: "note", required: true, size: 60, maxlength: "2000", placeholder: "what changes and why (shown in the history)" });
  const discard = h("button", { type: "button", class: "danger" }, "Discard draft");
  discard.addEventListener("click", async () => {
    if (discard.dataset.armed !== "yes") {
      discard.dataset.armed = "yes";
      discard.textContent = "Confirm: discard every draft edit";
      return;
    }
    try {
      await api.del("/draft");
      ctx.toast("Draft discarded: it is the active version again");
      reload();
    } catch (error) {
      ctx.failed(error);
    }
  });
  const form = h("form", { class: "provision" }, field("Note", note), h("button", { type: "submit", class: "primary" }, "Provision"), " ", discard);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const version = await api.post("/versions", { note: note.value.trim() });
      ctx.toast(`Provisioned version ${version.number}`);
      ctx.navigate("policy", { tab: "versions" });
    } catch (error) {
      ctx.failed(error);
    }
  });
  return form;
}

/** A diff of any two versions (the same shape for draft/active and version/version). */
export function renderDiff(found) {
  const list = (title, items, kind) => (items.length ? h("div", { class: "changes" }, h("h3", {}, title), h("ul", {}, items.map((i) => h("li", {}, badge(kind), " ", typeof i === "string" ? i : JSON.stringify(i))))) : null);
  const o = found.objects;
  const r = found.reachability;
  return h(
    "section",
    { class: "diff", "aria-label": `Diff ${found.from} to ${found.to}` },
    h("h2", {}, `Changes from ${found.from} to ${found.to}`),
    list("Added", o.added, "added"),
    list("Removed", o.removed, "removed"),
    list("Changed", o.changed, "changed"),
    h("h3", {}, `Reachability: ${r.gained} gained, ${r.lost} lost`),
    r.changes.length ? reachTable(r.changes) : h("p", { class: "empty" }, "No workload pair changes."),
    r.truncated ? h("p", { class: "note" }, "Only the first changes are listed.") : null,
    invariantsView(found.invariants),
    warningsView(found.warnings ?? [], found.warningsTotal ?? 0),
  );
}

/** What provisioning checks, shown before anyone provisions: violations that refuse (409), and
 * those an approved exception or a quarantine in progress lets through. */
function invariantsView(inv) {
  if (!inv || !inv.declared) return null;
  const mark = (v) => (v.excepted ? badge("excepted", "changed") : v.quarantine ? badge("quarantine") : badge("broken", "blocked"));
  const line = (v) => h("li", { dataset: { invariant: v.invariant } }, mark(v), " ", `${v.invariant} (${v.statement}): ${v.sources.slice(0, 3).join(", ")} → ${v.destinations.slice(0, 3).join(", ")} on ${v.port}, allowed by ${v.rule}`);
  const refusing = inv.refusing ?? 0;
  return h(
    "div",
    { class: "invariants", dataset: { refusing: String(refusing) } },
    h("h3", {}, `Invariants: ${inv.declared} declared, ${inv.total} violation(s)`),
    refusing ? h("p", { class: "note" }, `Provisioning will be refused: ${refusing} violation(s). Fix the draft (or provision with force from the CLI, which is audited).`) : null,
    inv.violations.length ? h("ul", {}, inv.violations.map(line)) : h("p", { class: "empty" }, "Every invariant is kept."),
  );
}

/** The linter's warnings about the newer side (selectors matching nothing, shadowed rules, ...). */
function warningsView(warnings, total) {
  const line = (w) => h("li", { dataset: { kind: w.kind } }, badge(w.kind, "changed"), " ", w.message, w.hint ? h("span", { class: "muted" }, ` (${w.hint})`) : null);
  return h(
    "div",
    { class: "lint" },
    h("h3", {}, `Lint warnings: ${total}`),
    warnings.length ? h("ul", {}, warnings.map(line)) : h("p", { class: "empty" }, "No warnings."),
    total > warnings.length ? h("p", { class: "note" }, `Only the first ${warnings.length} are listed.`) : null,
  );
}

function reachTable(changes) {
  const verdict = (v) => [badge(v.outcome), " ", v.rule ?? "default deny", h("div", { class: "muted" }, v.reason)];
  return h(
    "table",
    { class: "reach" },
    h("thead", {}, h("tr", {}, ["from", "to", "port", "change", "before", "after"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      changes.map((c) => h("tr", {}, h("td", {}, c.from), h("td", {}, c.to), h("td", {}, c.port), h("td", {}, badge(c.change)), h("td", {}, verdict(c.before)), h("td", {}, verdict(c.after)))),
    ),
  );
}

function simulationView(sim) {
  const totals = h(
    "table",
    { class: "sim-totals" },
    h("thead", {}, h("tr", {}, ["", "flows", "connections"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, CHANGES.map((c) => h("tr", { dataset: { change: c } }, h("th", { scope: "row" }, badge(c)), h("td", { class: "num" }, sim.totals[c].flows), h("td", { class: "num" }, sim.totals[c].connections)))),
  );
  const changed = sim.groups.filter((g) => g.change !== "unchanged");
  return h(
    "div",
    { class: "simulation" },
    totals,
    changed.length
      ? h(
          "table",
          { class: "sim-groups" },
          h("thead", {}, h("tr", {}, ["change", "draft rule", "source", "destination", "flows", "example"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            changed.map((g) =>
              h(
                "tr",
                {},
                h("td", {}, badge(g.change)),
                h("td", {}, g.rule),
                h("td", {}, g.source),
                h("td", {}, g.destination),
                h("td", { class: "num" }, g.flows),
                h("td", {}, g.examples.length ? [g.examples[0].flow, h("div", { class: "muted" }, g.examples[0].draftReason)] : ""),
              ),
            ),
          ),
        )
      : h("p", { class: "empty" }, "No recorded flow would change outcome."),
  );
}
