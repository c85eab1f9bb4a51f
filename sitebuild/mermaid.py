"""Draw the book's Mermaid flowcharts as SVG while the site is built, in Python.

The chapters keep their diagrams as ```` ```mermaid ```` blocks, which GitHub draws. The site
draws them here instead of loading Mermaid's JavaScript (Material would fetch it from a CDN), so
that neither the build nor the reader's browser needs the network. Only the subset of the
flowchart syntax the book uses is understood:

    flowchart LR            (or TD / TB; "graph" works as well as "flowchart")
        A["label<br/>second line"] --> B(("a circle"))
        A -->|"edge label"| C("rounded")
        C --> D{"a rhombus"}

Anything else raises ``MermaidError`` with the offending line, so a new construct fails the
build (``mkdocs build --strict``) instead of being drawn wrong.

Layout: each node's rank is its longest path from a source (a source with successors is pulled
next to its first successor); ranks are columns (rows for TD), nodes of one rank stacked in the
order they first appear. An edge between neighbouring ranks is a curve; an edge that skips ranks
runs in a lane above the drawing (to the left for TD), lanes assigned so that they do not overlap.
"""
from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass, field

__all__ = ["MermaidError", "render"]


class MermaidError(ValueError):
    pass


SHAPES = [  # (opening, closing, shape), longest first
    ("((", "))", "circle"), ("([", "])", "stadium"), ("[", "]", "rect"), ("(", ")", "round"),
    ("{", "}", "rhombus"),
]
NODE = re.compile(r"\s*([A-Za-z_][\w-]*)\s*")
ARROW = re.compile(r"\s*-->\s*(?:\|\s*(\"[^\"]*\"|[^|]*)\s*\|)?\s*")
CHAR_W, LINE_H, PAD_X, PAD_Y = 7.4, 17.0, 12.0, 9.0    # px, for a 13 px sans-serif label
GAP_X, GAP_Y, LANE_H, MARGIN = 46.0, 22.0, 24.0, 8.0


@dataclass
class Node:
    id: str
    lines: list[str] = field(default_factory=list)
    shape: str = "rect"
    rank: int = 0
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0     # centre
    y: float = 0.0


def _label(text: str) -> list[str]:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return [html.unescape(part.strip()) for part in re.split(r"<br\s*/?>", text)]


def _node(text: str, pos: int, nodes: dict[str, Node], line: str) -> tuple[str, int]:
    m = NODE.match(text, pos)
    if not m:
        raise MermaidError(f"expected a node id at column {pos + 1} of: {line.strip()}")
    name, pos = m.group(1), m.end()
    node = nodes.setdefault(name, Node(name, [name]))
    for opening, closing, shape in SHAPES:
        if text.startswith(opening, pos):
            end = text.find(closing, pos + len(opening))
            if opening in ("[", "(") and text[pos + len(opening):pos + len(opening) + 1] == '"':
                end = text.find('"' + closing, pos + len(opening) + 1) + 1   # a quoted label may hold ( ) [ ]
            if end <= pos:
                raise MermaidError(f"unclosed {opening!r} in: {line.strip()}")
            node.lines, node.shape = _label(text[pos + len(opening):end]), shape
            pos = end + len(closing)
            break
    return name, pos


def parse(source: str) -> tuple[str, dict[str, Node], list[tuple[str, str, list[str]]]]:
    lines = [ln for ln in source.strip().splitlines() if ln.strip() and not ln.strip().startswith("%%")]
    if not lines:
        raise MermaidError("empty diagram")
    head = re.fullmatch(r"\s*(?:flowchart|graph)\s+(LR|TD|TB)\s*;?\s*", lines[0])
    if not head:
        raise MermaidError(f"only 'flowchart LR' and 'flowchart TD' are drawn, not: {lines[0].strip()}")
    nodes: dict[str, Node] = {}
    edges: list[tuple[str, str, list[str]]] = []
    for line in lines[1:]:
        text = line.rstrip().rstrip(";")
        source_id, pos = _node(text, 0, nodes, line)
        while pos < len(text):
            m = ARROW.match(text, pos)
            if not m:
                raise MermaidError(f"unsupported syntax at column {pos + 1} of: {line.strip()}")
            label = _label(m.group(1)) if m.group(1) else []
            target_id, pos = _node(text, m.end(), nodes, line)
            edges.append((source_id, target_id, label))
            source_id = target_id
    return ("LR" if head.group(1) == "LR" else "TD"), nodes, edges


def _rank(nodes: dict[str, Node], edges) -> None:
    order = list(nodes)
    preds = {n: [s for s, t, _ in edges if t == n] for n in order}
    succs = {n: [t for s, t, _ in edges if s == n] for n in order}
    done: dict[str, int] = {}
    visiting: set[str] = set()

    def rank(n: str) -> int:
        if n in done:
            return done[n]
        if n in visiting:
            raise MermaidError(f"a cycle through {n!r}: only acyclic flowcharts are drawn")
        visiting.add(n)
        done[n] = max((rank(p) + 1 for p in preds[n]), default=0)
        return done[n]

    for n in order:
        rank(n)
    for n in order:           # a source feeding a later node sits just before it
        if not preds[n] and succs[n]:
            done[n] = max(0, min(done[t] for t in succs[n]) - 1)
    for n in order:
        nodes[n].rank = done[n]


def _size(node: Node) -> None:
    width = max(len(line) for line in node.lines) * CHAR_W + 2 * PAD_X
    height = len(node.lines) * LINE_H + 2 * PAD_Y
    if node.shape == "circle":
        width = height = max(width, height) * 0.92
    elif node.shape == "rhombus":
        width, height = width * 1.5, height * 1.5
    node.w, node.h = width, height


def render(source: str, title: str = "") -> str:
    """The diagram as an inline SVG element (a string)."""
    direction, nodes, edges = parse(source)
    _rank(nodes, edges)
    for node in nodes.values():
        _size(node)
    lr = direction == "LR"
    # Lay out along "main" (ranks) and "cross" (stacking); for TD swap the node sizes first.
    main_size = {n: (v.w if lr else v.h) for n, v in nodes.items()}
    cross_size = {n: (v.h if lr else v.w) for n, v in nodes.items()}
    ranks = sorted({v.rank for v in nodes.values()})
    columns = {r: [n for n in nodes if nodes[n].rank == r] for r in ranks}
    labelled = {nodes[s].rank for s, t, label in edges if label and nodes[t].rank == nodes[s].rank + 1}
    main_pos, cursor = {}, 0.0
    for r in range(ranks[-1] + 1):
        column = columns.get(r, [])
        width = max((main_size[n] for n in column), default=0.0)
        for n in column:
            main_pos[n] = cursor + width / 2
        cursor += width + GAP_X + (40.0 if r in labelled else 0.0)
    extent_cross = max(sum(cross_size[n] for n in col) + GAP_Y * (len(col) - 1) for col in columns.values())
    cross_pos = {}
    for col in columns.values():
        total = sum(cross_size[n] for n in col) + GAP_Y * (len(col) - 1)
        at = (extent_cross - total) / 2
        for n in col:
            cross_pos[n] = at + cross_size[n] / 2
            at += cross_size[n] + GAP_Y
    # Edges that skip ranks get lanes before the drawing (above for LR, left for TD).
    lanes: list[list[tuple[int, int]]] = []
    lane_of = {}
    for i, (s, t, _) in enumerate(edges):
        a, b = nodes[s].rank, nodes[t].rank
        if b - a < 2:
            continue
        for k, used in enumerate(lanes):
            if all(b <= lo or a >= hi for lo, hi in used):
                used.append((a, b))
                lane_of[i] = k
                break
        else:
            lanes.append([(a, b)])
            lane_of[i] = len(lanes) - 1
    offset = len(lanes) * LANE_H
    for n, v in nodes.items():
        m, c = main_pos[n] + MARGIN, cross_pos[n] + offset + MARGIN
        v.x, v.y = (m, c) if lr else (c, m)
    width = (cursor - GAP_X + 2 * MARGIN) if lr else (extent_cross + offset + 2 * MARGIN)
    height = (extent_cross + offset + 2 * MARGIN) if lr else (cursor - GAP_X + 2 * MARGIN)
    width = max(width, 2 * MARGIN + max((len(" ".join(lb)) * CHAR_W for *_, lb in edges), default=0))

    uid = "mm" + hashlib.sha1(source.encode()).hexdigest()[:8]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="npse-diagram" role="img" '
           f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
           f'style="min-width: {0.8 * width:.0f}px" '
           f'aria-labelledby="{uid}-title">',
           f'<title id="{uid}-title">{html.escape(title or _describe(nodes, edges))}</title>',
           f'<defs><marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
           f'fill="currentColor"/></marker></defs>']
    for i, (s, t, label) in enumerate(edges):
        a, b = nodes[s], nodes[t]
        if i in lane_of:
            lane = MARGIN + offset - (lane_of[i] + 0.5) * LANE_H
            if lr:
                x0, y0, x1, y1 = a.x, a.y - a.h / 2, b.x, b.y - b.h / 2
                d = (f"M{x0:.1f},{y0:.1f} C{x0:.1f},{lane:.1f} {x0:.1f},{lane:.1f} {x0 + 20:.1f},{lane:.1f} "
                     f"L{x1 - 20:.1f},{lane:.1f} C{x1:.1f},{lane:.1f} {x1:.1f},{lane:.1f} {x1:.1f},{y1:.1f}")
                lx, ly = (x0 + x1) / 2, lane
            else:
                x0, y0, x1, y1 = a.x - a.w / 2, a.y, b.x - b.w / 2, b.y
                d = (f"M{x0:.1f},{y0:.1f} C{lane:.1f},{y0:.1f} {lane:.1f},{y0:.1f} {lane:.1f},{y0 + 20:.1f} "
                     f"L{lane:.1f},{y1 - 20:.1f} C{lane:.1f},{y1:.1f} {lane:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
                lx, ly = lane, (y0 + y1) / 2
        elif lr:
            x0, y0, x1, y1 = a.x + a.w / 2, a.y, b.x - b.w / 2, b.y
            mid = (x0 + x1) / 2
            d = f"M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"
            lx, ly = mid, (y0 + y1) / 2
        else:
            x0, y0, x1, y1 = a.x, a.y + a.h / 2, b.x, b.y - b.h / 2
            mid = (y0 + y1) / 2
            d = f"M{x0:.1f},{y0:.1f} C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}"
            lx, ly = (x0 + x1) / 2, mid
        out.append(f'<path d="{d}" fill="none" stroke="currentColor" stroke-width="1.3" '
                   f'marker-end="url(#{uid}-arrow)"/>')
        if label:
            text = " ".join(label)
            w = len(text) * CHAR_W * 0.95 + 8
            out.append(f'<rect x="{lx - w / 2:.1f}" y="{ly - 9:.1f}" width="{w:.1f}" height="18" rx="3" '
                       f'class="npse-diagram-label"/>')
            out.append(f'<text x="{lx:.1f}" y="{ly + 4:.1f}" text-anchor="middle" font-size="12">'
                       f'{html.escape(text)}</text>')
    for v in nodes.values():
        x, y, w, h = v.x, v.y, v.w, v.h
        if v.shape == "circle":
            shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{w / 2:.1f}"'
        elif v.shape == "rhombus":
            shape = (f'<polygon points="{x:.1f},{y - h / 2:.1f} {x + w / 2:.1f},{y:.1f} '
                     f'{x:.1f},{y + h / 2:.1f} {x - w / 2:.1f},{y:.1f}"')
        else:
            radius = {"rect": 3, "round": 10, "stadium": h / 2}[v.shape]
            shape = (f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'rx="{radius:.1f}"')
        out.append(f'<g class="npse-diagram-node">{shape} stroke="currentColor" stroke-width="1.2"/>')
        top = y - (len(v.lines) - 1) * LINE_H / 2 + 4.5
        for k, line in enumerate(v.lines):
            out.append(f'<text x="{x:.1f}" y="{top + k * LINE_H:.1f}" text-anchor="middle" '
                       f'font-size="13">{html.escape(line)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _describe(nodes: dict[str, Node], edges) -> str:
    name = {n: " ".join(v.lines) for n, v in nodes.items()}
    return "Diagram: " + "; ".join(f"{name[s]} to {name[t]}" + (f" ({' '.join(lb)})" if lb else "")
                                   for s, t, lb in edges)
