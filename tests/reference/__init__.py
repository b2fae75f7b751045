"""A reference evaluator written from the documentation, and the property tests that hold the engine to it."""
