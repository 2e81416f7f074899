"""A reachability matrix as a grid a person reads at a glance, whatever the width of the terminal:
rows carry the full pod names with a number, columns only the numbers."""

from __future__ import annotations


def print_matrix(matrix: dict[str, dict[str, bool]], caption: str) -> None:
    from rich.console import Console
    from rich.table import Table

    refs = list(matrix)
    table = Table(header_style="bold", box=None)
    table.add_column("from \\ to", no_wrap=True)
    for i in range(len(refs)):
        table.add_column(str(i + 1), justify="center", no_wrap=True)
    for i, src in enumerate(refs):
        cells = ["[green]✓[/green]" if matrix[src].get(dst) else "[bold red]✗[/bold red]" for dst in refs]
        table.add_row(f"{i + 1:>2} {src}", *cells)
    allowed = sum(bool(v) for row in matrix.values() for v in row.values())
    console = Console()
    console.print(table)
    console.print(f"{caption}; rows: from, columns: to; {allowed} of {len(refs) ** 2} pairs allowed")
