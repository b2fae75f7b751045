// The rule editor: writes one Rule into the draft (PUT /rules/{tier}/{name}). Peers are typed as
// text, one per line: a kubectl selector, `any`, `ipList:NAME` or `cidr:NET[,NET] [except NET,...]`;
// the label picker appends `key=value` to the last selector, and each side previews how many
// workloads its selectors match now. Fields the form does not show (notBefore, ...) are kept.
import * as api from "./api.js";
import { append, clear, field, h, select } from "./dom.js";

const API_VERSION = "microseg.io/v1";

/** A selector (string or matchLabels/matchExpressions) in kubectl syntax. */
export function selectorText(sel) {
  if (typeof sel === "string") return sel;
  const parts = Object.entries(sel.matchLabels || {}).map(([k, v]) => `${k}=${v}`);
  for (const e of sel.matchExpressions || []) {
    if (e.operator === "In") parts.push(`${e.key} in (${e.values.join(",")})`);
    else if (e.operator === "NotIn") parts.push(`${e.key} notin (${e.values.join(",")})`);
    else if (e.operator === "Exists") parts.push(e.key);
    else parts.push(`!${e.key}`);
  }
  return parts.join(",");
}

function peerText(peer) {
  if (peer === "any" || peer.any) return "any";
  if (peer.selector !== undefined) return selectorText(peer.selector);
  if (peer.ipList) return `ipList:${peer.ipList}`;
  const cidrs = [].concat(peer.cidr);
  return `cidr:${cidrs.join(",")}${peer.except && peer.except.length ? ` except ${peer.except.join(",")}` : ""}`;
}

export function peersText(peers, separator = "; ") {
  if (peers === "any" || peers === undefined) return "any";
  return peers.map(peerText).join(separator);
}

export function parsePeers(text) {
  const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
  if (lines.length === 1 && lines[0] === "any") return "any";
  return lines.map((line) => {
    if (line === "any") return { any: true };
    if (line.startsWith("ipList:")) return { ipList: line.slice(7).trim() };
    if (line.startsWith("cidr:")) {
      const [nets, except] = line.slice(5).split(/\s+except\s+/);
      const cidr = nets.split(",").map((c) => c.trim()).filter(Boolean);
      const peer = { cidr: cidr.length === 1 ? cidr[0] : cidr };
      if (except) peer.except = except.split(",").map((c) => c.trim()).filter(Boolean);
      return peer;
    }
    return { selector: line };
  });
}

function inlineText(s) {
  const ports = s.endPort ? `${s.port}-${s.endPort}` : s.port;
  return ports === undefined ? s.protocol || "any" : `${ports}/${s.protocol || "tcp"}`;
}

export function servicesText(services) {
  if (services === "any" || services === undefined) return "any";
  return services.map((s) => (typeof s === "string" ? s : inlineText(s))).join(", ");
}

function parseInline(text) {
  return text
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean)
    .map((t) => {
      const [ports, protocol = "tcp"] = t.split("/");
      if (!/^\d/.test(ports)) return { protocol: ports };
      const [port, end] = ports.split("-").map(Number);
      return end ? { port, endPort: end, protocol } : { port, protocol };
    });
}

/** Open the editor in `box` for `rule` (null: a new rule). */
export function open(box, rule, options, ctx, reload) {
  const spec = rule ? rule.spec : { tier: "application", action: "allow", from: [], to: [], services: [] };
  const isNew = rule === null;
  const named = new Set(options.services);
  const chosen = spec.services === "any" ? [] : (spec.services || []).filter((s) => typeof s === "string" && named.has(s));
  const inline = spec.services === "any" ? [] : (spec.services || []).filter((s) => typeof s !== "string");
  const name = h("input", { name: "name", value: rule ? rule.metadata.name : "", required: true, disabled: !isNew, pattern: "[a-z0-9][a-z0-9._\\-]{0,63}", size: 28 });
  const tier = select("tier", options.tiers.filter((t) => t.name !== "quarantine").map((t) => t.name), spec.tier);
  tier.disabled = !isNew;
  const priority = h("input", { name: "priority", type: "number", min: "0", value: spec.priority === undefined ? "" : String(spec.priority), required: true });
  const action = select("action", ["allow", "deny", "pass"], spec.action);
  const from = side("From", spec.from, options.labels);
  const to = side("To", spec.to, options.labels);
  const anyService = h("input", { type: "checkbox", name: "anyService", checked: spec.services === "any" });
  const serviceBoxes = options.services.map((s) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "service", value: s, checked: chosen.includes(s) }), s));
  const inlinePorts = h("input", { name: "inline", value: inline.map(inlineText).join(", "), placeholder: "e.g. 3307/tcp, 9000-9009/tcp", size: 30 });
  const reason = h("input", { name: "reason", value: spec.reason || "", size: 50 });
  const owner = h("input", { name: "owner", value: spec.owner || "", size: 20 });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: spec.enabled !== false });
  const form = h(
    "form",
    { class: "rule-editor", "aria-label": isNew ? "New rule" : `Edit rule ${spec.tier}/${rule.metadata.name}` },
    h("h2", {}, isNew ? "New rule in the draft" : `Edit ${spec.tier}/${rule.metadata.name}`),
    h("div", { class: "row" }, field("Name", name), field("Tier", tier), field("Priority", priority, "unique in the tier; lower first"), field("Action", action)),
    h("div", { class: "row sides" }, from.element, to.element),
    h("fieldset", {}, h("legend", {}, "Services"), h("label", { class: "check" }, anyService, "any"), h("div", { class: "checks" }, serviceBoxes), field("Inline ports", inlinePorts)),
    h("div", { class: "row" }, field("Reason", reason), field("Owner", owner), h("label", { class: "check" }, enabled, "enabled")),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Save to draft"), " ", h("button", { type: "button", onclick: () => clear(box) }, "Cancel")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const services = anyService.checked
      ? "any"
      : [...serviceBoxes.map((l) => l.querySelector("input")).filter((c) => c.checked).map((c) => c.value), ...parseInline(inlinePorts.value)];
    const written = { ...spec, tier: tier.value, priority: Number(priority.value), action: action.value, from: parsePeers(from.text()), to: parsePeers(to.text()), services, enabled: enabled.checked };
    for (const [key, input] of [["reason", reason], ["owner", owner]]) {
      if (input.value.trim()) written[key] = input.value.trim();
      else delete written[key];
    }
    const document = { apiVersion: API_VERSION, kind: "Rule", metadata: { name: name.value.trim() }, spec: written };
    try {
      await api.put(`/rules/${encodeURIComponent(written.tier)}/${encodeURIComponent(document.metadata.name)}`, document);
      ctx.toast(`${written.tier}/${document.metadata.name} saved to the draft`);
      reload();
    } catch (error) {
      ctx.failed(error);
    }
  });
  append(clear(box), form);
  (isNew ? name : priority).focus();
  from.preview();
  to.preview();
}

/** One side of a rule: its peers, a label picker, and the live "matches N workloads" preview. */
function side(title, peers, labels) {
  const text = h("textarea", { name: title.toLowerCase(), rows: "3", cols: "34", spellcheck: "false" }, peersText(peers === undefined ? [] : peers, "\n"));
  const output = h("output", { class: "matches", "aria-live": "polite" });
  const keys = Object.keys(labels);
  const key = select("key", keys, keys[0]);
  const value = select("value", labels[keys[0]] || []);
  key.setAttribute("aria-label", `${title}: label key`);
  value.setAttribute("aria-label", `${title}: label value`);
  key.addEventListener("change", () => value.replaceChildren(...(labels[key.value] || []).map((v) => h("option", { value: v }, v))));
  let timer = null;
  let asked = 0;
  const preview = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const ticket = (asked += 1);
      const found = await count(text.value);
      if (ticket === asked) output.textContent = found;
    }, 250);
  };
  const pick = () => {
    const lines = text.value.split("\n");
    const last = lines.length ? lines[lines.length - 1].trim() : "";
    const pair = `${key.value}=${value.value}`;
    if (!last || last === "any" || last.includes(":")) lines.push(pair);
    else lines[lines.length - 1] = `${last},${pair}`;
    text.value = lines.filter((l) => l.trim()).join("\n");
    preview();
  };
  text.addEventListener("input", preview);
  const element = h(
    "fieldset",
    { class: "side", dataset: { side: title.toLowerCase() } },
    h("legend", {}, title),
    field("Peers, one per line", text, "selector, any, ipList:NAME or cidr:NET"),
    h("div", { class: "picker" }, key, "=", value, h("button", { type: "button", class: "small", onclick: pick }, "Add label")),
    output,
  );
  return { element, text: () => text.value, preview };
}

/** "matches N workloads" for the selectors among the peers (plus what else they name). */
async function count(text) {
  const peers = parsePeers(text);
  if (peers === "any") return "any address, managed or not";
  const selectors = peers.filter((p) => p.selector !== undefined).map((p) => p.selector);
  const others = peers.filter((p) => p.selector === undefined).map((p) => peerText(p));
  if (!peers.length) return "no peers: matches nothing";
  try {
    const names = new Set();
    for (const s of selectors) for (const n of await api.matching(s)) names.add(n);
    const shown = [...names].sort();
    const list = shown.length ? `: ${shown.slice(0, 8).join(", ")}${shown.length > 8 ? ", …" : ""}` : "";
    const extra = others.length ? ` + ${others.join(", ")}` : "";
    return selectors.length ? `matches ${names.size} workload${names.size === 1 ? "" : "s"}${list}${extra}` : others.join(", ");
  } catch (error) {
    return `invalid: ${error.message}`;
  }
}
