"""MkDocs hooks that turn docs/ into the book's website (named in mkdocs.yml under `hooks:`).

The Markdown under docs/ stays exactly as GitHub shows it; everything the site needs is done here,
at build time, with no network:

* navigation: the chapter order of docs/README.md's "Reading order", each chapter followed by its
  tutorial;
* math (`$...$`, `$$...$$`) to MathML and ```` ```mermaid ```` blocks to SVG (markdown_ext.py);
* the tutorials (tutorials/*.py, jupytext percent scripts) rendered as pages under tutorials/,
  the scripts themselves copied beside them, and tutorials/README.md as the tutorials' index;
* links out of docs/: to a tutorial -> its page; to an image under studies/ or weights/ -> a copy
  of it in the site; to any other file or folder of the repository -> the repository's web page
  for it (`repo_url` in mkdocs.yml, branch `extra.source_branch`);
* headings get GitHub's anchors (the ones the docs link to, checked by tests/test_docs.py).
"""
from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sitebuild import tutorial_pages  # noqa: E402
from sitebuild.markdown_ext import NpseSiteExtension  # noqa: E402

TUTORIALS = ROOT / "tutorials"
IMAGE = re.compile(r"\.(png|jpe?g|svg|gif|webp)$", re.I)
LINK = re.compile(r"(\]\(\s*<?)([^)\s>]+)(>?(?:\s+\"[^\"]*\")?\s*\))|((?:href|src)=\")([^\"]+)(\")")
FENCE = re.compile(r"^\s*(```+|~~~+)")
CSS = "assets/npse-site.css"


def github_slug(value: str, separator: str = "-") -> str:
    """GitHub's heading ids (what the docs' #anchors use): lower case, punctuation dropped."""
    text = re.sub(r"<[^>]+>", "", value)
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", separator)


def scripts() -> list[Path]:
    return sorted(p for p in TUTORIALS.glob("*.py") if re.match(r"(\d\d|[A-Z]\d?)_", p.name))


def chapter_key(name: str) -> str:
    """'09-se-block.md' and '09_se_block.py' share the key '09'; 'A-backend.md' and 'A_backend.py' 'A'."""
    return re.split(r"[-_]", name, maxsplit=1)[0]


def reading_order() -> list[tuple[str, str, str]]:
    """(label, title, file) of every chapter and appendix, in docs/README.md's reading order."""
    text = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    section = text.split("## Reading order", 1)[1].split("\n## ", 1)[0]
    found = []
    for m in re.finditer(r"^(?:(\d+)\.|- (Appendix [A-Z]\d?)\.)\s+\[([^\]]+)\]\(([^)#]+)\)", section, re.M):
        found.append((m.group(1) or m.group(2), m.group(3), m.group(4)))
    if not found:
        raise ValueError("docs/README.md: no chapters found under '## Reading order'")
    return found


# ------------------------------------------------------------------------------------ hooks
def on_config(config):
    config.markdown_extensions.append(NpseSiteExtension())
    config.mdx_configs.setdefault("toc", {})["slugify"] = github_slug
    tutorials = {chapter_key(p.name): p for p in scripts()}
    nav: list = [{"Contents": "README.md"}]
    for label, title, file in reading_order():
        key = chapter_key(file)
        entry = [{title: file}]
        if key in tutorials:
            entry.append({f"Tutorial: {tutorials[key].name}": f"tutorials/{tutorials[key].stem}.md"})
        nav.append({f"{label}. {title}" if label.isdigit() else f"{label}. {title}": entry})
    nav += [{"Tutorials": "tutorials/README.md"}, {"Figures": "figures/README.md"},
            {"About this site": "site.md"}]
    config.nav = nav
    config.extra_css = [*config.extra_css, CSS]
    return config


def on_files(files: Files, config) -> Files:
    for script in scripts():
        files.append(File.generated(config, f"tutorials/{script.stem}.md",
                                    content=tutorial_pages.page(script)))
        files.append(File.generated(config, f"tutorials/{script.name}", abs_src_path=str(script)))
    files.append(File.generated(config, "tutorials/README.md",
                                content=(TUTORIALS / "README.md").read_text(encoding="utf-8")))
    files.append(File.generated(config, CSS, abs_src_path=str(ROOT / "sitebuild" / "npse-site.css")))
    # Images of studies/ and weights/ (outside docs/) that the book shows: copied in, same path.
    docs = Path(config.docs_dir)
    wanted = set()
    for page in docs.rglob("*.md"):
        for target in _targets(page.read_text(encoding="utf-8")):
            path = (page.parent / target.split("#")[0]).resolve()
            if IMAGE.search(target) and path.is_file() and not path.is_relative_to(docs.resolve()):
                wanted.add(path)
    for path in sorted(wanted):
        files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    src = page.file.src_uri
    where = f"docs/{src}" if not page.file.generated_by else src      # the page's file in the repo
    if src == "tutorials/README.md":
        where = "tutorials/README.md"
    elif src.startswith("tutorials/") and src.endswith(".md"):
        where = f"tutorials/{Path(src).stem}.py"
    markdown = _rewrite(markdown, where, src, config, files)
    key = chapter_key(Path(src).name)
    if "/" not in src and src != "README.md":
        script = next((p for p in scripts() if chapter_key(p.name) == key), None)
        if script is not None:
            markdown += (f"\n\n---\n\nThis chapter's tutorial: [{script.name}](tutorials/{script.stem}.md), "
                         f"a script that also opens as a notebook.\n")
    return markdown


# --------------------------------------------------------------------------------- links
def _targets(markdown: str):
    for line in _prose_lines(markdown):
        for m in LINK.finditer(line):
            yield m.group(2) or m.group(5)


def _lines(markdown: str):
    """``(line, is_prose)`` for every line: False inside a fenced code block and on its fences."""
    fence = None
    for line in markdown.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            yield line, False
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            yield line, False
        else:
            yield line, True


def _prose_lines(markdown: str):
    return (line for line, prose in _lines(markdown) if prose)


def _rewrite(markdown: str, where: str, src: str, config, files: Files) -> str:
    """Every relative link of a page at repository path `where` (site path `src`), made to work."""
    repo = (config.repo_url or "").rstrip("/")
    branch = config.extra.get("source_branch", "main")
    here = posixpath.dirname(src)

    def fix(target: str) -> str:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            return target
        path, hash_, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(where), path))
        if repo_path.startswith("docs/") and (repo_path.endswith(".md") or IMAGE.search(repo_path)
                                              or (ROOT / repo_path).is_dir()):
            site_path = repo_path[len("docs/"):]
        elif repo_path == "tutorials/README.md" or (repo_path.startswith("tutorials/")
                                                    and repo_path.endswith(".py")
                                                    and (ROOT / repo_path).is_file()):
            site_path = repo_path[:-3] + ".md" if repo_path.endswith(".py") else repo_path
        elif IMAGE.search(repo_path) and files.get_file_from_path(repo_path) is not None:
            site_path = repo_path
        else:
            if not (ROOT / repo_path).exists():
                return target        # left for MkDocs' link check to report
            kind = "tree" if (ROOT / repo_path).is_dir() else "blob"
            return f"{repo}/{kind}/{branch}/{repo_path.rstrip('/')}" + (hash_ + anchor)
        relative = posixpath.relpath(site_path, here or ".") if site_path else "."
        return relative + hash_ + anchor

    out = []
    for line, prose in _lines(markdown):
        if prose:
            parts = re.split(r"(`[^`]*`)", line)       # leave inline code alone
            line = "".join(part if part.startswith("`") else LINK.sub(
                lambda m: (m.group(1) + fix(m.group(2)) + m.group(3)) if m.group(2)
                else (m.group(4) + fix(m.group(5)) + m.group(6)), part) for part in parts)
        out.append(line)
    return "\n".join(out)
