"""`minilog consume` commands (not yet implemented)."""
