"""`minilog serve` commands (not yet implemented)."""
