"""Command-line surface: one module per command group, all calling library functions."""
