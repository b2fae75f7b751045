// The map's label filter, applied in the browser to the nodes the map API returned: `key=value`,
// `key!=value`, `key` (has the key) and `!key`, comma separated, all of them must hold. A node
// that matches stays with every edge it has, and the peers at the other end of those edges, so
// "role=db" shows who talks to the databases.

export function parse(text) {
  return (text || "")
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const ne = part.split("!=");
      if (ne.length === 2) return { key: ne[0].trim(), op: "!=", value: ne[1].trim() };
      const eq = part.split(/==?/);
      if (eq.length === 2) return { key: eq[0].trim(), op: "=", value: eq[1].trim() };
      if (part.startsWith("!")) return { key: part.slice(1).trim(), op: "absent" };
      return { key: part, op: "present" };
    });
}

export function matches(labels, requirements) {
  return requirements.every(({ key, op, value }) => {
    const has = Object.hasOwn(labels, key);
    if (op === "=") return has && labels[key] === value;
    if (op === "!=") return !has || labels[key] !== value;
    if (op === "present") return has;
    return !has;
  });
}

/** The map with only matching nodes, their edges and those edges' other ends. */
export function apply(graph, requirements) {
  if (!requirements.length) return graph;
  const chosen = new Set(graph.nodes.filter((n) => matches(n.labels || {}, requirements)).map((n) => n.id));
  const edges = graph.edges.filter((e) => chosen.has(e.source) || chosen.has(e.destination));
  const kept = new Set([...chosen, ...edges.flatMap((e) => [e.source, e.destination])]);
  return { ...graph, nodes: graph.nodes.filter((n) => kept.has(n.id)), edges };
}
