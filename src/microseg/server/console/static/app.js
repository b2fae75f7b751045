// The console's shell: log in with an API token, learn its role (GET /whoami), and route between
// the views by the URL fragment (#/map, #/workloads?selector=..., ...). Each view module exports
// `render(root, ctx)` and draws into a fresh element, so a slow answer for a view the user has
// already left lands in a detached node instead of the page.
import * as api from "./api.js";
import { clear, h } from "./dom.js";
import * as events from "./events.js";
import * as flows from "./flows.js";
import * as map from "./map.js";
import * as policy from "./policy.js";
import * as workloads from "./workloads.js";

const VIEWS = {
  map: ["Map", map.render],
  workloads: ["Workloads", workloads.render],
  policy: ["Policy", policy.render],
  flows: ["Flows", flows.render],
  events: ["Events", events.render],
  audit: ["Audit", events.renderAudit],
};
const EDIT_ROLES = new Set(["editor", "admin"]);

const $ = (id) => document.getElementById(id);
let who = null;

function toast(message, kind = "info") {
  const box = $("toast");
  const lines = Array.isArray(message) ? message : [message];
  box.replaceChildren(h("div", { class: `toast toast-${kind}` }, lines.map((l) => h("div", {}, l))));
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.replaceChildren(), kind === "error" ? 12000 : 5000);
}

/** Show an error from the API (or anything else) without losing the server's explanation. */
function failed(error) {
  toast(error instanceof api.ApiError ? error.lines() : [String(error.message || error)], "error");
}

function parseRoute() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  return { name: VIEWS[path] ? path : "map", params: new URLSearchParams(query || "") };
}

function navigate(name, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null)).toString();
  location.hash = `#/${name}${query ? "?" + query : ""}`;
}

async function route() {
  if (!who) return;
  const { name, params } = parseRoute();
  for (const link of $("nav").querySelectorAll("a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const root = h("div", { class: `view view-${name}`, dataset: { view: name } });
  clear($("view")).append(root);
  const ctx = { who, canEdit: EDIT_ROLES.has(who.role), params, toast, failed, navigate };
  try {
    await VIEWS[name][1](root, ctx);
  } catch (error) {
    // A view the user has already left may fail (its graph has no container any more): ignore.
    if (root.isConnected) failed(error);
  }
  document.title = `${VIEWS[name][0]} · microseg`;
  const title = root.querySelector(".view-title");
  if (title && root.isConnected && !root.contains(document.activeElement)) title.focus();
}

async function login(value) {
  api.setToken(value);
  try {
    who = await api.get("/whoami");
  } catch (error) {
    api.setToken("");
    who = null;
    const why = error instanceof api.ApiError && error.status === 401 ? "That token is unknown or revoked." : error.message;
    $("login-error").textContent = why;
    $("token").focus();
    return;
  }
  $("login-error").textContent = "";
  $("login").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  $("who").textContent = `${who.name} · ${who.role}`;
  document.body.dataset.role = who.role;
  await route();
}

function logout() {
  api.setToken("");
  who = null;
  delete document.body.dataset.role;
  clear($("view"));
  $("nav").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("token").value = "";
  $("token").focus();
}

function start() {
  $("nav").append(
    ...Object.entries(VIEWS).map(([name, [title]]) => h("a", { href: `#/${name}`, dataset: { view: name } }, title)),
  );
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    login($("token").value.trim());
  });
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  if (api.token()) login(api.token());
  else $("token").focus();
}

start();
