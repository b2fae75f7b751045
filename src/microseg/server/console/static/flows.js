// The flows explorer: hourly flow summaries (GET /flows/summary) filtered by labels, ends, port,
// protocol, process, verdict and time, paged with `continue`; any row explains itself under the
// active version and the draft.
import * as api from "./api.js";
import { append, SINCE, field, h, heading, select } from "./dom.js";
import { explainRow, flowRows } from "./verdicts.js";

const FILTERS = ["selector", "src", "dst", "port", "proto", "process", "verdict", "since"];

export async function render(root, ctx) {
  const p = (name, fallback = "") => ctx.params.get(name) ?? fallback;
  const input = (name, placeholder, size = 16) => h("input", { name, value: p(name), placeholder, size });
  const form = h(
    "form",
    { class: "controls" },
    field("Labels (either end)", input("selector", "e.g. role=db", 18)),
    field("Source", input("src", "workload or address", 14)),
    field("Destination", input("dst", "workload or address", 14)),
    field("Port", h("input", { name: "port", type: "number", min: "0", max: "65535", value: p("port"), size: 6 })),
    field("Protocol", select("proto", [["", "any"], "tcp", "udp", "sctp", "icmp", "other"], p("proto"))),
    field("Process", input("process", "glob, e.g. *sql*", 12)),
    field("Verdict", select("verdict", [["", "any"], "allowed", "would-block", "blocked"], p("verdict"))),
    field("Time", select("since", SINCE, p("since", "24h"))),
    h("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate("flows", Object.fromEntries(new FormData(form)));
  });
  const results = h("div", { class: "results" });
  const why = h("div", { class: "row-explain", "aria-live": "polite" });
  append(root, heading("Flows"), form, results, why);
  const query = Object.fromEntries(FILTERS.map((f) => [f, p(f, f === "since" ? "24h" : "")]));
  const showWhy = async (row) => {
    why.replaceChildren(h("h2", {}, "Why"), h("p", { class: "muted" }, "Explaining…"));
    try {
      why.replaceChildren(h("h2", {}, "Why"), await explainRow(row));
    } catch (error) {
      ctx.failed(error);
    }
  };
  await page(results, query, 0, showWhy, ctx);
}

async function page(results, query, after, showWhy, ctx) {
  const found = await api.get("/flows/summary", { ...query, limit: 200, continue: after || "" });
  results.querySelector(".more")?.remove();
  const existing = results.querySelector("tbody");
  const table = flowRows(found.items, showWhy);
  if (existing && table.tagName === "TABLE") existing.append(...table.querySelector("tbody").children);
  else if (!existing) results.append(table);
  if (found.continue) {
    const more = h("button", { type: "button", class: "more" }, "Load more");
    more.addEventListener("click", () => page(results, query, found.continue, showWhy, ctx).catch(ctx.failed));
    results.append(more);
  }
}
