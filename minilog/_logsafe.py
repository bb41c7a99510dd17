"""Client-supplied strings made safe to put into a log line or a terminal.

Rules:
- A string a client chose (group id, member id, client id, topic name in an
  error) never reaches a log line raw: a newline in a group id would forge
  a log line, an ESC sequence would rewrite the operator's terminal.
- `logsafe` keeps printable text as it is (so ordinary names read and grep
  the same) and writes everything else as Python's repr escapes: `\\n`,
  `\\r`, `\\x1b`, `\\u2028`. The backslash itself is doubled, so an escaped
  newline and a literal backslash-n stay distinguishable.
- The result is bounded (`chars_max`): a 32 KiB group id costs a log line
  of a few hundred characters, with the original length said.

A leaf module: imports nothing from the project, usable from every layer.
Apply it where the value is formatted, i.e. `log.info("group %s ...",
logsafe(group_id))`; the escaping is only done when the line is written,
never to the value kept in memory or on disk.
"""

from __future__ import annotations

__all__ = ["logsafe", "LOGSAFE_CHARS_MAX"]

LOGSAFE_CHARS_MAX = 256     # characters of a client string kept in one log line


def _escape(char: str) -> str:
    return repr(char)[1:-1]       # '\n' -> \n, '\x1b' -> \x1b, '\\' -> \\, '\u2028' -> \u2028


def logsafe(value: object, chars_max: int = LOGSAFE_CHARS_MAX) -> str:
    """`value` as one line of printable text (see the module rules).

    Args:
        value: a client-supplied string (anything else goes through `str`).
        chars_max: keep at most this many characters of it; a cut is marked
            with `...(N chars)`.

    Returns:
        The text, unchanged when it is short, printable and has no backslash.
    """
    text = value if isinstance(value, str) else str(value)
    cut = text[:chars_max]
    if not (cut.isprintable() and "\\" not in cut):
        cut = "".join(c if c.isprintable() and c != "\\" else _escape(c) for c in cut)
    if len(text) > chars_max:
        cut += f"...({len(text)} chars)"
    return cut
