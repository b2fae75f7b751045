"""The host agent: a reconciler that enforces ruleset documents with nftables and reports flows."""
