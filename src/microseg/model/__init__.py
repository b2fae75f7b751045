"""Pure, frozen values: labels, selectors, workloads, services, rules, tiers, rulesets, verdicts.

Nothing here does I/O or imports other microseg packages except `microseg.errors`. Everything else
(policy files, the engine, renderers) builds on these values.
"""
