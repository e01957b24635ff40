"""A review as one self-contained HTML file: it opens from disk, with no server and no network.

Each embedded view is rendered the way the dashboard renders it: the page its address names (Dash's page
registry) builds its layout from the address, and that layout is written out as static HTML.  Text, tables and
messages keep the dashboard's stylesheet (inlined); figures are drawn by plotly.js, inlined too (the cartesian
bundle when every trace is cartesian, plotly.py's full bundle otherwise); images are data: URIs already (the
dashboard encodes them so), and any other image source is left out.  Controls (sliders, dropdowns, buttons)
would do nothing in a file and are left out; links become plain text.  What a page only loads by a callback
after it opens (e.g. the unit page's ablation) is not in the file: the file says so.

Every string from the store is escaped; the narrative goes through narrative.to_html (markdown without raw HTML,
then nh3); figure JSON is written into the script with `<` escaped, so no run name can close the script.
"""
import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import plotly.io as pio

from dashboard.read import reviews
from dashboard.serving import lean_pages
from dashboard.views.reviews import narrative

STYLE = Path(__file__).resolve().parents[2] / "assets" / "style.css"
HTML_TAGS = {"div", "span", "p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tfoot", "tr", "th",
             "td", "ul", "ol", "li", "b", "i", "em", "strong", "code", "pre", "small", "br", "hr", "section",
             "details", "summary", "figure", "figcaption", "blockquote", "sup", "sub", "abbr", "main",
             "header", "nav", "article", "aside", "caption", "dl", "dt", "dd", "s", "u", "mark", "time"}
AS_SPAN = {"a", "link"}  # links: their text, since nothing they point to is in the file
PASS_THROUGH = {"Loading", "Tabs", "Tab"}  # dcc containers: their children are what shows
ATTRS = {"className": "class", "title": "title", "colSpan": "colspan", "rowSpan": "rowspan", "alt": "alt"}
VOID = {"br", "hr", "img"}


class Renderer:
    """Dash components to static HTML, collecting the figures on the way (drawn by one script at the end)."""

    def __init__(self):
        self.figures: list[str] = []  # figure JSON, in the order of their placeholders

    def render(self, node) -> str:
        if node is None or isinstance(node, bool):
            return ""
        if isinstance(node, (str, int, float)):
            return html.escape(str(node))
        if isinstance(node, (list, tuple)):
            return "".join(self.render(n) for n in node)
        to_json = getattr(node, "to_plotly_json", None)
        if to_json is None:
            return ""
        spec = to_json()
        return self._component(spec.get("namespace", ""), spec.get("type", ""), spec.get("props", {}))

    def _component(self, namespace: str, kind: str, props: dict) -> str:
        children = props.get("children")
        if namespace == "dash_core_components":
            if kind == "Graph":
                return self._figure(props.get("figure"))
            if kind == "Markdown":
                return f'<div class="markdown">{narrative.to_html(_text(children))}</div>'
            if kind == "Link":
                return f"<span>{self.render(children)}</span>"
            return self.render(children) if kind in PASS_THROUGH else ""
        if namespace != "dash_html_components":
            return ""  # another library's widget (e.g. the runs grid): live only
        tag = kind.lower()
        if tag == "img":
            src = str(props.get("src") or "")
            if not src.startswith("data:image/"):
                return ""
            return f'<img src="{html.escape(src)}"{_attrs(props)}>'
        if tag in AS_SPAN:
            return f"<span{_attrs(props)}>{self.render(children)}</span>"
        if tag not in HTML_TAGS:
            return ""  # buttons, inputs, iframes, scripts: nothing a file can use
        inner = "" if tag in VOID else self.render(children)
        return f"<{tag}{_attrs(props)}>" + ("" if tag in VOID else f"{inner}</{tag}>")

    def _figure(self, fig) -> str:
        if fig is None:
            return ""
        data = json.loads(pio.to_json(fig, validate=False))
        title = ((data.get("layout") or {}).get("title") or {})
        name = title.get("text") if isinstance(title, dict) else str(title)
        self.figures.append(json.dumps(data))
        label = html.escape(re.sub(r"<[^>]*>", " ", str(name or "figure")))
        return f'<div class="review-figure" id="figure-{len(self.figures) - 1}" role="figure" aria-label="{label}"></div>'


def _text(children) -> str:
    return children if isinstance(children, str) else "\n".join(map(str, children or []))


def _css(style: dict) -> str:
    out = []
    for key, value in style.items():
        value = str(value)
        if "url(" in value.lower() or any(c in value for c in ";{}<>\"'\\"):
            continue  # nothing that could load from elsewhere or break out of the attribute
        prop = re.sub(r"[A-Z]", lambda m: "-" + m.group(0).lower(), str(key))
        if isinstance(style[key], (int, float)) and prop not in ("opacity", "z-index", "flex", "font-weight"):
            value += "px"
        out.append(f"{prop}:{value}")
    return ";".join(out)


def _attrs(props: dict) -> str:
    out = [f' {name}="{html.escape(str(props[key]))}"' for key, name in ATTRS.items() if props.get(key) is not None]
    if isinstance(props.get("style"), dict) and (css := _css(props["style"])):
        out.append(f' style="{html.escape(css)}"')
    return "".join(out)


# ---- which page an address names ------------------------------------------------------------------

def _pages() -> list[dict]:
    import dash
    if not dash.page_registry:
        import dashboard.app  # noqa: F401  (registers the pages; a test or script may call export first)
    return list(dash.page_registry.values())


def _match(template: str, path: str) -> dict | None:
    names = re.findall(r"<([^>]+)>", template)
    pattern = "^" + re.sub(r"<[^>]+>", "([^/]+)", re.escape(template).replace(r"\<", "<").replace(r"\>", ">")) + "/?$"
    m = re.match(pattern, path)
    return dict(zip(names, m.groups())) if m else None


def resolve(url: str) -> tuple[dict, dict] | None:
    """(page registry entry, the layout's keyword arguments) for a dashboard address, or None."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    pages = _pages()
    for page in pages:
        if page.get("path") == parts.path and not page.get("path_template"):
            return page, query
    templated = [p for p in pages if p.get("path_template")]
    templated.sort(key=lambda p: -len(re.sub(r"<[^>]+>", "", p["path_template"])))  # the most specific first
    for page in templated:
        if (found := _match(page["path_template"], parts.path)) is not None:
            return page, {**query, **found}
    return None


def view_section(url: str, renderer: Renderer) -> str:
    """One embedded view, rendered as its page renders it for this address."""
    head = f'<p class="muted small">View: <code>{html.escape(url)}</code></p>'
    found = resolve(url)
    if found is None:
        return f'<section class="card">{head}<div class="message message-warn">No page of the dashboard shows ' \
               f'this address.</div></section>'
    page, kwargs = found
    try:
        body = renderer.render(page["layout"](**kwargs) if callable(page["layout"]) else page["layout"])
    except Exception as e:  # a page that cannot be built for this address: say so, export the rest
        body = f'<div class="message message-error">This view could not be rendered: {html.escape(str(e)[:300])}</div>'
    return f'<section class="card review-view">{head}{body}</section>'


# ---- the file ----------------------------------------------------------------------------------------

def plotly_js(figures: list[str]) -> str:
    """The smallest plotly.js that draws every figure: the cartesian bundle if it is installed and enough."""
    traces = {t.get("type", "scatter") for f in figures for t in json.loads(f).get("data", [])}
    if lean_pages.cartesian_available() and traces <= lean_pages.CARTESIAN_TRACES:
        return lean_pages.bundle_path().read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs
    return get_plotlyjs()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ms else "—"


def _summary(review: reviews.Review, missing: list[str]) -> str:
    e = html.escape
    gone = "".join(f'<div class="message message-warn">{e(m)}</div>' for m in missing)
    comments = "".join(f'<li><strong>{e(c.author)}</strong> <span class="muted small">{_when(c.time_ms)}</span>'
                       f'<div class="review-comment">{e(c.text)}</div></li>' for c in review.comments)
    return (f"<h1>{e(review.title)}</h1>"
            f'<p class="muted">By {e(", ".join(review.authors) or reviews.ANONYMOUS)} · created '
            f"{_when(review.created_ms)} · updated {_when(review.updated_ms)} · version {review.version}</p>{gone}"
            f'<section class="card"><h2>Decision</h2><p>{e(review.decision) or "—"}</p>'
            f'<div class="review-reasons">{e(review.reasons)}</div></section>'
            f'<section class="card review-narrative">{narrative.to_html(review.narrative)}</section>'
            + (f'<section class="card"><h2>Comments</h2><ul>{comments}</ul></section>' if comments else ""))


EXTRA_CSS = """body{margin:0}.page{max-width:1200px;margin:0 auto;padding:16px}
.review-reasons,.review-comment{white-space:pre-wrap}.review-figure{min-height:120px}"""
DRAW = """<script>(function(){var figs=%s;figs.forEach(function(f,i){var l=f.layout||{};l.autosize=true;
Plotly.newPlot('figure-'+i,f.data||[],l,{displaylogo:false,responsive:true,staticPlot:false});});})();</script>"""


def export_html(review_id: str) -> str:
    """The review, its views as the dashboard renders them now, and their figures, in one HTML document."""
    review = reviews.load(review_id)
    renderer = Renderer()
    views = "".join(view_section(url, renderer) for _, url in review.views)
    figures = "[" + ",".join(renderer.figures) + "]"
    body = _summary(review, reviews.missing_runs(review)) + (f"<h2>Views ({len(review.views)})</h2>{views}"
                                                             if review.views else "")
    note = ("Exported from MNIST Lab on " + _when(int(datetime.now(timezone.utc).timestamp() * 1000))
            + ". Each view as its page showed it then; parts a page loads after it opens (and controls) are "
              "only in the live dashboard.")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline' "
            "'unsafe-eval'; style-src 'unsafe-inline'; img-src data:; font-src data:\">"
            f"<title>{html.escape(review.title)} · review · MNIST Lab</title>"
            f"<style>{STYLE.read_text(encoding='utf-8')}{EXTRA_CSS}</style>"
            f"<script>{plotly_js(renderer.figures)}</script></head>"
            f'<body><main class="page">{body}<p class="muted small">{html.escape(note)}</p></main>'
            + DRAW % figures.replace("<", "\\u003c") + "</body></html>")
