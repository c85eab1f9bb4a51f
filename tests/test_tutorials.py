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
