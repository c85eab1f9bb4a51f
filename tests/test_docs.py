"""The book checks itself: links, anchors, Python code blocks and `npse` command lines in the docs.

Covered files: every Markdown file under docs/ and tutorials/, and README.md.

* Every relative link or image ``[text](path#anchor)`` must point at a file inside the repository,
  and an ``#anchor`` must be a heading of the target file, slugged as GitHub does (lower case,
  punctuation dropped, spaces to hyphens, ``-1``, ``-2`` ... for repeated headings). Plain-text
  mentions of ``docs/NN-*.md`` and ``tutorials/NN_*.py`` must name files that exist, so a
  renumbering cannot leave stale names behind.
* Every ```` ```python ```` block in docs/*.md runs, in a fresh interpreter per file and a fresh
  namespace per block. Two HTML comments, on the line right above a block's opening fence, change
  that (GitHub does not display them):

  ``<!-- docs-test: continue -->``  the block continues the previous Python block of the same file
                                    (same namespace), as a reader pasting them in order would;
  ``<!-- docs-test: skip REASON -->`` the block is not run; REASON is required (it needs the data
                                    set, PyTorch or a GPU, or it is an excerpt of a source file).
* **Printed output.** A ```` ```text ```` block that follows a Python block directly (nothing but
  blank lines between the two) is that block's printed output, and the block must print it
  (`printed_matches`): line by line, numbers compared to the digits shown (an integer exactly, a
  number with decimals or an exponent to one unit of its last digit shown, so ``0.2041`` accepts
  0.2040 to 0.2042), the rest of the text exactly but for spaces, and ``...`` standing for
  anything on its line (a value that depends on the machine, such as a timing).
* Every link whose text is a chapter's number or letter (``[6](06-conv2d.md)``, ``[chapter 6](...)``,
  ``[appendix B](...)``) names the chapter it points to.
* In ```` ```bash ```` blocks, every ``npse ...`` and ``python -m npse.torch_reference ...`` command
  line must parse with the real argument parser (nothing is run), and ``python tutorials/X.py`` or
  ``bash tests/X.sh`` must name an existing file.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "tutorials").rglob("*.md")])
CHAPTERS = sorted((ROOT / "docs").glob("*.md"))
MARKER = re.compile(r"^<!--\s*docs-test:\s*(continue|skip)\b(.*?)-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def split_markdown(text: str):
    """Return (prose lines with code blocks blanked, [(language, first line number, code, marker)])."""
    lines = text.split("\n")
    prose, blocks = [], []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, language, start = m.group(2), m.group(3).lower(), i + 1
        marker = None
        for back in range(i - 1, -1, -1):           # the marker: the last non-blank line above
            if lines[back].strip():
                mm = MARKER.match(lines[back].strip())
                marker = (mm.group(1), mm.group(2).strip()) if mm else None
                break
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence[0] * len(fence)):
            body.append(lines[i])
            i += 1
        prose.extend([""] * (len(body) + 2))
        blocks.append((language, start, "\n".join(body), marker))
        i += 1
    return prose, blocks


# ----------------------------------------------------------------------------------- anchors
def github_slug(heading: str) -> str:
    """The id GitHub gives a heading: rendered text, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)     # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                              # inline HTML tags
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)                            # keeps letters, digits, _ and -
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for line in prose:
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_slug(m.group(2).strip())
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
        found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return found


def test_github_slug_rules():
    assert github_slug("`se_blocks()` and `.gate`: looking at the excitations") == \
        "se_blocks-and-gate-looking-at-the-excitations"
    assert github_slug("Warm-up + cosine, per *iteration*") == "warm-up--cosine-per-iteration"
    assert github_slug("See [chapter 2](module.md) (again)") == "see-chapter-2-again"


# ------------------------------------------------------------------------------------ links
def links(path: Path):
    """(line number, target) of every Markdown link, image and HTML href/src outside code."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    for number, line in enumerate(prose, start=1):
        line = re.sub(r"`[^`]*`", "", line)                          # inline code is not a link
        for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            yield number, target
        for target in re.findall(r"(?:href|src)=\"([^\"]+)\"", line):
            yield number, target


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the relative links of one Markdown file (empty if nothing)."""
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):          # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root).as_posix()}:{number}: {target}"
        if not dest.is_relative_to(root):
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in "
                            f"{dest.relative_to(root).as_posix()}")
    return problems


@pytest.mark.parametrize("path", MARKDOWN, ids=rel)
def test_relative_links_and_anchors_resolve(path):
    problems = link_problems(path)
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A title\n## Twice\n## Twice\n")
    page = tmp_path / "docs" / "b.md"
    page.write_text("[ok](a.md#a-title) [ok](a.md#twice-1) [ok](#local) `[code](x.md)`\n"
                    "## Local\n[gone](c.md) [anchor](a.md#nothing) [out](../../x.md)\n"
                    "```\n[in a block](d.md)\n```\n[web](https://example.org/x#y)\n")
    problems = link_problems(page, root=tmp_path)
    assert [p.split(": ", 1)[0] for p in problems] == ["docs/b.md:3"] * 3, problems
    assert "c.md: no such file" in problems[0] and "#nothing" in problems[1]
    assert "leaves the repository" in problems[2]


# docs/NN-topic.md and tutorials/NN_topic.py; appendices take a capital letter (A, B, or A1, ...)
MENTION = re.compile(r"\b((?:docs/|tutorials/)?(?:(?:\d\d|[A-Z]\d?)-[\w-]+\.md|(?:\d\d|[A-Z]\d?)_\w+\.py))\b")


# Where chapter and tutorial names are mentioned: the book, and the code and tests that point to it.
MENTIONING = sorted({*MARKDOWN, *(ROOT / "tutorials").glob("*.py"), *(ROOT / "npse").rglob("*.py"),
                     *(ROOT / "tests").glob("*.py"), *(ROOT / "tests").glob("*.sh"),
                     *(ROOT / "weights").rglob("*.md")})


@pytest.mark.parametrize("path", MENTIONING, ids=rel)
def test_mentioned_chapters_and_tutorials_exist(path):
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        for name in MENTION.findall(line):
            folder = "docs" if name.endswith(".md") else "tutorials"
            candidate = ROOT / name if "/" in name else ROOT / folder / name
            if not candidate.exists():
                problems.append(f"{rel(path)}:{number}: mentions {name}, which does not exist")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- Python blocks
def python_chains(path: Path):
    """Chains of Python blocks to run, each a list of (line, code); and the skipped ones."""
    _, blocks = split_markdown(path.read_text(encoding="utf-8"))
    chains, skipped = [], []
    for language, line, code, marker in blocks:
        if language not in ("python", "py"):
            continue
        if marker and marker[0] == "skip":
            skipped.append((line, marker[1]))
        elif marker and marker[0] == "continue":
            assert chains, f"{rel(path)}:{line}: 'continue' but no Python block runs before it"
            chains[-1].append((line, textwrap.dedent(code)))
        else:
            chains.append([(line, textwrap.dedent(code))])       # a block inside a list is indented
    return chains, skipped


RUNNER = """
import contextlib, io, json, sys, traceback
chains, name = json.loads(sys.stdin.read()), sys.argv[1]
failures, printed = [], {}
for chain in chains:
    namespace = {"__name__": "__docs__"}
    for line, code in chain:
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"{name}:{line}", "exec"), namespace)
        except BaseException:
            failures.append(f"{name}: the block at line {line} failed:\\n" + traceback.format_exc(limit=4))
            break
        finally:
            printed[line] = out.getvalue()
print(json.dumps([failures, printed]))
"""


def expected_outputs(path: Path) -> dict:
    """{first line of a Python block: (first line of its output block, the text shown)}."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    _, blocks = split_markdown(text)
    found = {}
    for (language, start, code, _), (after, out_start, out, _) in zip(blocks, blocks[1:]):
        closing = start + len(code.split("\n"))             # 0-based index of the closing fence
        between = lines[closing + 1:out_start - 1]
        if language in ("python", "py") and after == "text" and not any(s.strip() for s in between):
            found[start] = (out_start, out)
    return found


NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)\b")


def tokens(line: str) -> list:
    """A line as numbers (value, tolerance implied by the digits shown), '...' and single characters;
    spaces dropped."""
    out, i = [], 0
    while i < len(line):
        if line.startswith("...", i):
            out.append("...")
            i += 3
            continue
        m = NUMBER.match(line, i)
        if m and not (i and (line[i - 1].isalnum() and not line[i - 1].isdigit() or line[i - 1] == "_")
                      and m.group()[0] in "-+"):
            s = m.group()
            mantissa, _, exponent = s.lower().partition("e")
            decimals = len(mantissa.partition(".")[2])
            exact = "." not in mantissa and not exponent
            tolerance = 0.0 if exact else 10.0 ** ((int(exponent) if exponent else 0) - decimals)
            out.append((float(s), tolerance))
            i = m.end()
            continue
        if not line[i].isspace():
            out.append(line[i])
        i += 1
    return out


def tokens_match(expected: list, actual: list) -> bool:
    if not expected:
        return not actual
    head = expected[0]
    if head == "...":
        return any(tokens_match(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    if not actual:
        return False
    got = actual[0]
    if isinstance(head, tuple):
        if not isinstance(got, tuple):
            return False
        (want, tolerance), value = head, got[0]
        same = (value == want or (value != value and want != want)
                or abs(value - want) <= tolerance * (1 + 1e-9))
        return same and tokens_match(expected[1:], actual[1:])
    return got == head and tokens_match(expected[1:], actual[1:])


def printed_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` (what a block printed) agrees with ``expected`` (its output block)."""
    want = [line for line in expected.strip("\n").split("\n")]
    got = [line for line in actual.strip("\n").split("\n")]
    return len(want) == len(got) and all(tokens_match(tokens(w), tokens(g)) for w, g in zip(want, got))


@pytest.mark.parametrize("path", CHAPTERS, ids=rel)
def test_python_blocks_run(path, tmp_path):
    chains, skipped = python_chains(path)
    for line, reason in skipped:
        assert reason, f"{rel(path)}:{line}: a skipped block must say why (<!-- docs-test: skip REASON -->)"
    if not chains:
        pytest.skip("no Python block to run")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NPSE_DATA=str(tmp_path / "no-data"), MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, "-c", RUNNER, rel(path)], input=json.dumps(chains),
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    failures, printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(failures)
    skipped_lines = {line for line, _ in skipped}
    for line, (out_line, expected) in expected_outputs(path).items():
        if line in skipped_lines:
            continue
        actual = printed[str(line)]
        assert printed_matches(expected, actual), (
            f"{rel(path)}:{line}: the block printed\n{actual}\nbut line {out_line} shows\n{expected}")


def test_printed_output_is_compared_to_the_digits_shown():
    assert printed_matches("[ 0.2041 -0.4082  0.2041] 3", "[0.20412415 -0.40824829 0.20412415] 3")
    assert printed_matches("error 1.7e-05 took ... s", "error 1.72e-05 took 0.31 s")
    assert printed_matches("-0.0", "0.0") and printed_matches("nan", "nan")
    assert not printed_matches("0.2041", "0.2044")                # beyond one unit of the last digit
    assert not printed_matches("3", "3.4") and not printed_matches("16", "17")   # integers exactly
    assert not printed_matches("fc1.weight", "fc2.weight")
    assert not printed_matches("a\nb", "a") and not printed_matches("True", "False")
    assert printed_matches("1e-10 < x", "1.4e-10 < x") and not printed_matches("1e-10", "3e-10")


def test_an_output_block_is_the_text_block_right_after_a_python_block(tmp_path):
    page = tmp_path / "d.md"
    page.write_text("```python\nprint(1)\n```\n\n```text\n1\n```\n```python\nprint(2)\n```\n"
                    "Prose.\n```text\nnot an output\n```\n")
    assert expected_outputs(page) == {1: (5, "1")}


# ------------------------------------------------------------------------ chapter link labels
CHAPTER_FILE = re.compile(r"(?:^|/)(\d\d|[A-Z])-[\w-]+\.md$")
CHAPTER_LABEL = re.compile(r"^\s*(?:(?:chapter|chapters|appendix|ch\.)\s+)?(\d{1,2}|[A-Z])\b(?!\.\d)", re.I)


def label_problems(path: Path) -> list[str]:
    """Links whose text names a chapter (``[6](...)``, ``[chapter 6](...)``, ``[appendix B]``)
    that is not the chapter of the file they point to."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    problems = []
    for number, line in enumerate(prose, start=1):
        line = re.sub(r"`[^`]*`", "", line)
        for label, target in re.findall(r"(?<!!)\[([^\]]+)\]\(\s*<?([^)\s>#]+)", line):
            chapter, named = CHAPTER_FILE.search(target), CHAPTER_LABEL.match(label)
            if not chapter or not named:
                continue
            bare = re.fullmatch(r"\s*(\d{1,2}|[A-Z])\s*", label)
            if not bare and not re.match(r"\s*(chapter|chapters|appendix|ch\.)\s", label, re.I):
                continue                                        # ordinary text that starts with a letter
            shown, actual = named.group(1).upper(), chapter.group(1)
            if (shown.isdigit() and actual.isdigit() and int(shown) != int(actual)) or \
                    (shown.isdigit() != actual.isdigit()) or (not shown.isdigit() and shown != actual):
                problems.append(f"{rel(path)}:{number}: [{label}]({target}) names chapter {shown}, "
                                f"but the file is chapter {actual.lstrip('0')}")
    return problems


@pytest.mark.parametrize("path", MARKDOWN, ids=rel)
def test_chapter_link_labels_name_their_target(path):
    problems = label_problems(path)
    assert not problems, "\n".join(problems)


def test_a_wrong_chapter_label_is_found(tmp_path):
    global ROOT
    page = tmp_path / "x.md"
    page.write_text("[6](06-conv2d.md) [3](06-conv2d.md) [chapter 5](05-loss.md#a) "
                    "[appendix A](B-speed.md) [A layer](06-conv2d.md) `[4](07-pooling.md)`\n")
    saved, ROOT = ROOT, tmp_path
    try:
        problems = label_problems(page)
    finally:
        ROOT = saved
    assert len(problems) == 2 and "[3](06-conv2d.md)" in problems[0] and "[appendix A]" in problems[1]


# ----------------------------------------------------------------------------- shell blocks
def command_lines(path: Path):
    """(line, argv) of each simple command in the file's bash/sh/shell blocks."""
    _, blocks = split_markdown(path.read_text(encoding="utf-8"))
    for language, start, code, _ in blocks:
        if language not in ("bash", "sh", "shell", "console"):
            continue
        for offset, line in enumerate(code.replace("\\\n", " ").split("\n")):
            line = line.strip()
            if not line or line.startswith(("#", "for ", "do ", "done")):
                continue
            for part in re.split(r"&&|\|\||;|\|", line.split(" #")[0]):
                argv = shlex.split(part)
                while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):   # VAR=value npse ...
                    argv = argv[1:]
                if argv:
                    yield start + 1 + offset, argv


def check_command(argv) -> str | None:
    """None if the command line is acceptable, else what is wrong with it."""
    if argv[:3] == ["python", "-m", "npse"]:
        argv = ["npse", *argv[3:]]
    if argv[0] == "npse":
        from npse.cli import build_parser
        parser, args = build_parser(), argv[1:]
    elif argv[:3] == ["python", "-m", "npse.torch_reference"]:
        from npse.torch_reference import build_parser
        parser, args = build_parser(), argv[3:]
    elif argv[0] in ("python", "bash") and len(argv) > 1 and not argv[1].startswith("-"):
        return None if (ROOT / argv[1]).exists() or "$" in argv[1] else f"{argv[1]} does not exist"
    else:
        return None                                         # pip, git, ...: not ours to check
    try:
        parser.parse_args(args)
    except SystemExit as e:
        return f"the command line does not parse (exit status {e.code})" if e.code else None
    return None


@pytest.mark.parametrize("path", MARKDOWN, ids=rel)
def test_shell_commands_parse(path, capsys):
    problems = []
    for line, argv in command_lines(path):
        problem = check_command(argv)
        if problem:
            problems.append(f"{rel(path)}:{line}: {' '.join(argv)}: {problem}\n{capsys.readouterr().err}")
    assert not problems, "\n".join(problems)


def test_markers_and_command_checks(tmp_path, capsys):
    page = tmp_path / "c.md"
    page.write_text("```python\nx = 1\n```\n<!-- docs-test: continue -->\n```python\nx += 1\n```\n"
                    "<!-- docs-test: skip needs a GPU -->\n```python\nimport cupy\n```\n"
                    "```bash\nnpse train --epochs 2  # fine\nnpse train --no-such-option\n```\n")
    chains, skipped = python_chains(page)
    assert chains == [[(1, "x = 1"), (5, "x += 1")]] and skipped == [(9, "needs a GPU")]
    checked = {line: check_command(argv) for line, argv in command_lines(page)}
    assert checked[13] is None and "does not parse" in checked[14], checked
    assert "unrecognized arguments" in capsys.readouterr().err
