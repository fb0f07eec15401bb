"""The tools: one module per tool, each declaring its parameters once."""
