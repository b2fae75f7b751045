"""microseg: label-based microsegmentation with explainable verdicts and nftables enforcement."""

__version__ = "0.1.0"
