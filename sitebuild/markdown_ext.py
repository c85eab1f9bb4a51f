"""Two Python-Markdown extensions for the site: `$...$` math as MathML, ```mermaid blocks as SVG.

Both run while MkDocs builds, so the pages need no JavaScript to show math or diagrams and load
nothing from the network. The Markdown sources are unchanged: GitHub renders the same `$...$`
and ```` ```mermaid ```` blocks itself.

Math: ``$$...$$`` (display, may span lines) and ``$...$`` (inline, GitHub's rule: no space just
inside the dollars, not preceded or followed by a word character or another dollar) are converted
by latex2mathml into MathML, which browsers draw natively (Chromium since version 109, Firefox,
Safari). Code spans and code blocks are left alone. A formula latex2mathml cannot convert fails
the build with the formula in the message.
"""
from __future__ import annotations

import re

from latex2mathml.converter import convert
from markdown import Extension
from markdown.inlinepatterns import InlineProcessor
from markdown.preprocessors import Preprocessor

from . import mermaid

DISPLAY = r"\$\$(.+?)\$\$"
INLINE = r"(?<![\\$\w])\$(?=\S)(.+?)(?<=[^\s\\])\$(?![\w$])"


class MathError(ValueError):
    pass


def to_mathml(latex: str, display: bool) -> str:
    try:
        mathml = convert(latex.strip(), display="block" if display else "inline")
    except Exception as error:      # latex2mathml raises many kinds; name the formula
        raise MathError(f"cannot convert ${latex}$ to MathML: {error!r}") from error
    return mathml.replace("\\_", "_")      # latex2mathml keeps the backslash of \_ in \text{...}


class _Math(InlineProcessor):
    def __init__(self, pattern: str, md, display: bool):
        super().__init__(pattern, md)
        self.compiled_re = re.compile(pattern, re.DOTALL)
        self.display = display

    def handleMatch(self, m, data):
        latex = self.unescape(m.group(1))
        html = to_mathml(latex, self.display)
        return self.md.htmlStash.store(html), m.start(0), m.end(0)


class _Mermaid(Preprocessor):
    """```mermaid fences -> a stashed <figure> holding the SVG (before the fenced-code extensions)."""

    FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*mermaid\s*$")

    def run(self, lines):
        out, i = [], 0
        while i < len(lines):
            m = self.FENCE.match(lines[i])
            if not m:
                out.append(lines[i])
                i += 1
                continue
            fence, body, i = m.group("fence"), [], i + 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            i += 1
            svg = mermaid.render("\n".join(body))
            placeholder = self.md.htmlStash.store(f'<figure class="npse-diagram-figure">{svg}</figure>')
            out.extend(["", placeholder, ""])
        return out


class NpseSiteExtension(Extension):
    def extendMarkdown(self, md):
        md.preprocessors.register(_Mermaid(md), "npse_mermaid", 28)   # after whitespace (30), before fences (25)
        # After code spans (backtick, 190), before backslash escapes (180).
        md.inlinePatterns.register(_Math(DISPLAY, md, display=True), "npse_math_display", 187)
        md.inlinePatterns.register(_Math(INLINE, md, display=False), "npse_math_inline", 186)


def makeExtension(**kwargs):  # pragma: no cover - Markdown's entry point convention
    return NpseSiteExtension(**kwargs)


__all__ = ["NpseSiteExtension", "MathError", "to_mathml"]
