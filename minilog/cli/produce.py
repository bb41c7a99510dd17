"""`minilog produce` commands (not yet implemented)."""
