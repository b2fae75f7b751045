"""Visibility analytics over flow summaries: flow sets, dependency map, simulation, recommendations.

Pure functions over summary rows and policy engines (no store, no server, no I/O): flowset parses
and deduplicates rows; depmap, simulate and recommend read its flows and ask the engine for verdicts.
"""
