"""`minilog groups` commands (not yet implemented)."""
