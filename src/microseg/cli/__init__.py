"""The command line: Typer commands, one module per command group; `main.app` wires them."""
