"""The engine: label index, identities, the compiler and the one evaluator.

`microseg.engine.engine.PolicyEngine` wires them; start reading there.
"""
