"""A tutorial script (jupytext "percent" format) as a Markdown page of the site.

``# %% [markdown]`` cells become prose, ``# %%`` cells Python code blocks, in their order. The page
offers the script for download after its first cell (the script is copied beside the page).
"""
from __future__ import annotations

from pathlib import Path

import jupytext


def page(script: Path) -> str:
    notebook = jupytext.reads(script.read_text(encoding="utf-8"), fmt="py:percent")
    parts = []
    for index, cell in enumerate(notebook.cells):
        source = cell.source.strip("\n")
        if not source.strip():
            continue
        if cell.cell_type == "markdown":
            parts.append(source)
            if index == 0:
                parts.append(f"[Download {script.name}]({script.name}) (the same file runs as a script "
                         f"and opens as a notebook: [how](../site.md#the-tutorials-as-notebooks)).")
        else:
            parts.append(f"```python\n{source}\n```")
    return "\n\n".join(parts) + "\n"


def title(script: Path) -> str:
    """The first Markdown heading of the script's first cell (the page's title)."""
    notebook = jupytext.reads(script.read_text(encoding="utf-8"), fmt="py:percent")
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return script.stem
