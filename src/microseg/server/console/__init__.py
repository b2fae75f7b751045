"""The web console's static files (`static/`): HTML, CSS, JavaScript modules, and cytoscape.js
vendored under `static/vendor/` with its licence. Served by `microseg.server.routes_console`;
no build step, nothing fetched from another origin at run time."""
