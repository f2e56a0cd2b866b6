"""Text for the command line: escaping what a store holds, and layouts that never cut a field.

**Escaping.**  Names and other strings read from a store (or given on the command line) may hold
characters a terminal acts on instead of showing: C0 and C1 controls (ESC, the 8-bit CSI U+009B,
NEL U+0085), line and paragraph separators (U+2028, U+2029), bidirectional overrides (U+202E) and
other format characters.  Everything printed as text goes through :func:`escape`, which writes each
character Python does not count as printable as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN`` (the
escapes of a Python string literal), so one line of output is always one row, on a terminal or in
a pipe.  Tensor names cannot contain a backslash, so in a name a backslash always starts an escape.

**Layout.**  Piped output has one line per row, columns separated by two spaces, no padding at the
end of a line, nothing cut.  On a terminal the same tables are laid out for its width: a row whose
last column (a name) does not fit puts that column on a line of its own below the row, and long
prose lines wrap at spaces.  A name or digest is never cut or broken by tensorcas; one longer than
the whole terminal is left to the terminal to wrap, so it can still be copied whole.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

#: How far a folded name or wrapped line is indented below its row.
FOLD_INDENT = "    "


def escape(text: str) -> str:
    """``text`` with every non-printable character written as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def terminal_width() -> int:
    """Columns of the terminal (``COLUMNS`` first, as ``shutil`` reads it)."""
    return max(20, shutil.get_terminal_size((80, 24)).columns)


def table(
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[bool],
    width: int | None,
    indent: str = "",
) -> list[str]:
    """Rows as lines; every cell is escaped here.  ``right[i]``: right-align column ``i``.  The
    last column is free: never padded, and folded below its row when ``width`` is too small."""
    cells = [[escape(c) for c in row] for row in rows]
    if not cells:
        return []
    ncols = len(cells[0])
    widths = [max(len(row[i]) for row in cells) for i in range(ncols - 1)]
    lines = []
    for row in cells:
        fixed = "  ".join(
            (cell.rjust(w) if right[i] else cell.ljust(w))
            for i, (cell, w) in enumerate(zip(row, widths))
        )
        free = row[-1]
        head = indent + fixed + ("  " if ncols > 1 else "")
        if width is None or len(head) + len(free) <= width or not free or ncols == 1:
            lines.append((head + free).rstrip())
        else:
            lines.append(head.rstrip())
            lines.append(indent + FOLD_INDENT + free)
    return lines


def prose(text: str, *, width: int | None) -> list[str]:
    """One line of prose (escaped), wrapped at spaces to ``width`` on a terminal."""
    text = escape(text)
    if width is None or len(text) <= width:
        return [text]
    import textwrap

    return textwrap.wrap(
        text,
        width=width,
        subsequent_indent=FOLD_INDENT,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [text]
