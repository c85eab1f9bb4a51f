"""Every tutorial script runs to the end and checks its chapter's claims.

The tutorials are the chapters' companions: each one prints what it shows and asserts what its
chapter claims (shapes, counts, which entry a gradient check flags, error sizes as bounds). A
failing assertion, or a script that no longer runs, fails this test, so a chapter's claim cannot
go stale unnoticed.
"""
import ast
import pathlib
import re
import subprocess
import sys

import pytest

# Chapter tutorials are named NN_topic.py; appendix ones take a capital letter (A, B, or A1, ...).
SCRIPTS = sorted(p for p in (pathlib.Path(__file__).parent.parent / "tutorials").glob("*.py")
                 if re.match(r"(\d\d|[A-Z]\d?)_", p.name))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_tutorial_runs_and_its_claims_hold(script, tmp_path):
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), f"{script.name} printed nothing"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_tutorial_asserts_its_claims(script):
    tree = ast.parse(script.read_text(encoding="utf-8"))
    asserts = sum(isinstance(node, ast.Assert) for node in ast.walk(tree))
    assert asserts >= 3, (f"{script.name} has {asserts} assert statements: a tutorial asserts what "
                          f"its chapter claims, so that CI notices when a claim goes stale")


# ------------------------------------------------------------------------- as notebooks
# Each tutorial is a jupytext "percent" script: `# %%` code cells and `# %% [markdown]` cells. The
# same file opens as a notebook (Jupyter, JupyterLab, VS Code); these tests read it the way
# jupytext does and execute it in a fresh python3 kernel, one kernel per tutorial, cell by cell.
def as_notebook(script):
    import jupytext
    return jupytext.read(script, fmt="py:percent")


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_tutorial_is_a_notebook_with_prose_linking_its_chapter(script):
    notebook = as_notebook(script)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and kinds.count("markdown") >= 2 and "code" in kinds, kinds
    chapter = re.match(r"(\d\d|[A-Z]\d?)_", script.name).group(1)
    first = notebook.cells[0].source
    assert first.startswith("# Tutorial "), first[:80]
    assert re.search(rf"\]\(\.\./docs/{chapter}-[\w-]+\.md\)", first), \
        f"{script.name}: the first cell links its chapter, ../docs/{chapter}-....md"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            code = "\n".join(line.split("#")[0] for line in cell.source.splitlines())
            assert not re.search(r"(?<![.\w])__file__", code), f"{script.name}: a notebook has no __file__"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_tutorial_executes_as_a_notebook(script, tmp_path):
    from nbclient import NotebookClient
    notebook = as_notebook(script)
    client = NotebookClient(notebook, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()        # raises CellExecutionError, with the cell and traceback, on a failure
    printed = [output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []) if output.get("output_type") == "stream"]
    assert "".join(printed).strip(), f"{script.name} printed nothing as a notebook"
