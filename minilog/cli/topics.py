"""`minilog topics` commands (not yet implemented)."""
