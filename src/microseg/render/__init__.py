"""Pure functions from a ruleset document to data-plane text, and the means to check them.

    RulesetDocument --plan--> nftables.render  -> NftRender(text, warnings)        (the agent's default)
                          \\-> iptables.render -> IptablesRender(ipset, v4, v6, ...) (fallback)
    semantics.decide: what a document means (the spec both renderers are checked against)
    nftverify.parse + evaluate: the rendered nft text, evaluated packet by packet

Public API (import the modules: `from microseg.render import nftables`):

- `nftables.render(doc, settings=RenderSettings(), cgroups=None, *, uids=None) -> NftRender`
- `nftables.render_delete(settings=RenderSettings()) -> str`
- `iptables.render(doc, settings=RenderSettings(), cgroups=None, *, uids=None) -> IptablesRender`
- `semantics.decide(doc, direction, peer, local, protocol, port, at) -> (Action, ref)` and
  `semantics.outcome(mode, action) -> (verdict, logged)`
- `nftverify.parse(text) -> Program`, `nftverify.evaluate(program, hook, Packet) -> Decision`
- `nftables.rule_comment(ref) -> str`, `nftables.counter_refs(doc) -> {comment: ref}` and
  `iptables.counter_refs(doc)`: how the agent maps per-rule counters back to rule refs

Nothing here touches the kernel, the file system or the network; applying text is the agent's job.
Kubernetes manifests (NetworkPolicy, Calico, Cilium) will join this package as further renderers.
"""

from microseg.render import iptables, nftables, nftverify, semantics

__all__ = ["iptables", "nftables", "nftverify", "semantics"]
