"""Text drawn once, shown two ways: lines of styled segments and tables of cells, as plain values.

Off a terminal (a pipe, a file, a ticket) they become plain text here, without rich, which costs
30 ms to import and more to lay a table out; on a terminal `to_console` and `rich_tables` hand the
same values to rich for colour and the terminal's width. Both ways say the same text (what
tests/unit/test_render.py checks); rich only styles, wraps and aligns it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, Group

# rich's Text drops these control characters: so does the plain text, so both say the same
_CONTROL = str.maketrans(dict.fromkeys((7, 8, 11, 12, 13)))


@dataclass(frozen=True, slots=True)
class Line:
    """One line: (text, rich style) segments; on a terminal the first one's style is the whole
    line's, under the others' (rich's Text(first, style).append(...)). `highlight`: rich highlights
    it as it highlights any printed string (numbers, addresses, URLs)."""

    segments: tuple[tuple[str, str], ...] = ()
    highlight: bool = False

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.segments).translate(_CONTROL)


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    title_left: bool = False  # rich centres a title over its table unless told
    fold: bool = False  # on a terminal, a cell too long for its column is folded, not cut with an ellipsis


def plain_lines(lines: Iterable[Line]) -> str:
    return "".join(f"{line.text}\n" for line in lines)


def plain_tables(tables: Sequence[Table]) -> str:
    """Each table as its title, its header and its rows, the columns aligned and never wrapped
    (a pipe wants whole lines), a blank line between tables."""
    def shown(table: Table) -> list[str]:
        cells = [[cell.translate(_CONTROL) for cell in row] for row in (table.columns, *table.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
        return [table.title.translate(_CONTROL),
                *("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                  for row in cells)]

    return "\n".join("".join(f"{line}\n" for line in shown(table)) for table in tables)


def to_console(lines: Iterable[Line], console: Console) -> None:
    """The lines through rich: styled, highlighted where asked, wrapped at the console's width."""
    from rich.text import Text

    for line in lines:
        (first, style), *rest = line.segments or (("", ""),)
        text = Text(first, style=style)
        for segment in rest:
            text.append(*segment)
        console.print(console.highlighter(text) if line.highlight else text)


def rich_tables(tables: Sequence[Table]) -> Group:
    """The tables as rich draws them on a terminal: no box, bold headers."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    drawn = []
    for table in tables:
        shown = RichTable(title=table.title, title_justify="left" if table.title_left else "center", box=None)
        for column in table.columns:
            shown.add_column(column, overflow="fold" if table.fold else "ellipsis")
        for row in table.rows:
            shown.add_row(*(Text(cell) for cell in row))  # the user's text, never markup
        drawn.append(shown)
    return Group(*drawn)
