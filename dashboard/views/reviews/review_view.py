"""The review pages' pieces: the list of reviews, and one review (its editor, its views live, its comments).

Everything from the store is shown as text (Dash escapes it); the narrative is shown as the export shows it,
rendered by narrative.to_html (markdown without raw HTML, sanitised by nh3).
"""
from datetime import datetime, timezone

from dash import dcc, html

from dashboard.read import reviews
from dashboard.views import widgets
from dashboard.views.reviews import narrative

VIEW_HEIGHT_PX = 640


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ms else "—"


def meta_line(r: reviews.Review) -> str:
    return (f"By {', '.join(r.authors) or reviews.ANONYMOUS} · created {when(r.created_ms)} · "
            f"updated {when(r.updated_ms)} · version {r.version}")


def list_table(found: list[reviews.Review]):
    if not found:
        return html.P("No review yet: start one below, or with \"Add to review\" on a compare, search, run or "
                      "unit page.", className="muted")
    head = html.Tr([html.Th(h) for h in ("review", "decision", "authors", "views", "comments", "updated")])
    rows = [html.Tr([html.Td(dcc.Link(r.title or r.review_id[:8], href=f"/reviews/{r.review_id}")),
                     html.Td(r.decision[:80] or "—"), html.Td(", ".join(r.authors) or "—"),
                     html.Td(str(len(r.views)), className="num"), html.Td(str(len(r.comments)), className="num"),
                     html.Td(when(r.updated_ms))]) for r in found]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="data-table", id="reviews-table")


def new_review_form() -> html.Div:
    return widgets.card("Start a review", html.Div([
        html.Label("Title", htmlFor="reviews-new-title", className="small muted"),
        dcc.Input(id="reviews-new-title", type="text", maxLength=reviews.TITLE_MAX, className="text-input grow",
                  placeholder="e.g. Which learning rate for the 784-30-10 net?"),
        html.Button("Create", id="reviews-new", n_clicks=0, className="button-primary"),
    ], className="row"), html.Div(id="reviews-new-status", role="status"))


def narrative_shown(text: str):
    if not (text or "").strip():
        return html.P("No narrative yet.", className="muted")
    return dcc.Markdown(narrative.to_html(text), dangerously_allow_html=True, className="review-narrative")


def decision_shown(r: reviews.Review) -> list:
    return [html.P(["Decision: ", html.Strong(r.decision or "—")]),
            html.P(r.reasons, style={"whiteSpace": "pre-wrap"}) if r.reasons else None]


def _field(label: str, component) -> html.Div:
    return html.Div([html.Label(label, htmlFor=component.id, className="small muted", style={"display": "block"}),
                     component], style={"marginBottom": 10})


def editor(r: reviews.Review, user: str | None) -> html.Div:
    # Under basic auth the signed-in user writes (the field only shows who); otherwise a name kept in this browser.
    who = _field("Signed in as" if user else "Your name (kept in this browser)",
                 dcc.Input(id="review-author", type="text", maxLength=reviews.AUTHOR_MAX, className="text-input",
                           value=user, disabled=True) if user else
                 dcc.Input(id="review-author", type="text", maxLength=reviews.AUTHOR_MAX, className="text-input",
                           persistence=True, persistence_type="local", placeholder="who is writing"))
    return widgets.card("Edit", _field("Title", dcc.Input(id="review-title", type="text", value=r.title,
                                                          maxLength=reviews.TITLE_MAX, className="text-input",
                                                          style={"width": "100%"})),
                        _field(f"Narrative (markdown, at most {reviews.NARRATIVE_MAX:,} characters)",
                               dcc.Textarea(id="review-narrative", value=r.narrative, className="text-input",
                                            style={"width": "100%", "height": 220})),
                        _field("Decision: the run or config adopted",
                               dcc.Input(id="review-decision", type="text", value=r.decision, className="text-input",
                                         maxLength=reviews.DECISION_MAX, style={"width": "100%"})),
                        _field("Reasons", dcc.Textarea(id="review-reasons", value=r.reasons, className="text-input",
                                                       style={"width": "100%", "height": 90})),
                        who,
                        html.Div([html.Button("Save", id="review-save", n_clicks=0, className="button-primary"),
                                  html.Div(id="review-save-status", role="status", className="small grow")],
                                 className="row"))


def view_card(i: int, url: str) -> html.Div:
    """One embedded view, live: the dashboard's own page at the address it was saved with."""
    return html.Div([
        html.Div([html.H3(f"View {i + 1}", style={"margin": 0}), html.Code(url, className="small grow"),
                  dcc.Link("open ↗", href=url, className="small")], className="row"),
        html.Iframe(src=url, title=f"View {i + 1}: {url}", className="review-frame",
                    style={"width": "100%", "height": VIEW_HEIGHT_PX, "border": "1px solid var(--border)",
                           "borderRadius": 6, "marginTop": 8}),
    ], className="card review-view")


def comments_list(r: reviews.Review):
    if not r.comments:
        return html.P("No comments yet.", className="muted", id="review-no-comments")
    return html.Ul([html.Li([html.Strong(c.author or reviews.ANONYMOUS), " ",
                             html.Span(when(c.time_ms), className="muted small"),
                             html.Div(c.text, className="review-comment", style={"whiteSpace": "pre-wrap"})])
                    for c in r.comments], className="review-comments")


def comment_box() -> html.Div:
    return html.Div([
        html.Label("Add a comment", htmlFor="review-comment-text", className="small muted", style={"display": "block"}),
        dcc.Textarea(id="review-comment-text", value="", maxLength=reviews.COMMENT_MAX, className="text-input",
                     style={"width": "100%", "height": 70}),
        html.Div([html.Button("Comment", id="review-comment-add", n_clicks=0, className="button"),
                  html.Div(id="review-comment-status", role="status", className="small grow")], className="row"),
    ])


def review_page(r: reviews.Review, missing: list[str], user: str | None) -> html.Div:
    gone = widgets.message("This review references runs that are gone: " + "; ".join(missing) + ".", "warn",
                           id="review-missing") if missing else None
    return html.Div([
        dcc.Store(id="review-id", data=r.review_id),
        dcc.Store(id="review-version", data=r.version),
        html.Div([html.H2(r.title, id="review-heading", className="grow"),
                  html.Button("Export (one HTML file)", id="review-export-button", n_clicks=0, className="button"),
                  dcc.Download(id="review-export")], className="row"),
        html.P(meta_line(r), id="review-meta", className="muted small"),
        dcc.Link("← all reviews", href="/reviews"),
        gone,
        html.Div([html.Div([widgets.card("Narrative", html.Div(narrative_shown(r.narrative), id="review-narrative-shown")),
                            widgets.card("Decision", html.Div(decision_shown(r), id="review-decision-shown"))]),
                  editor(r, user)], className="grid-2"),
        html.H3(f"Views ({len(r.views)})"),
        html.Div([view_card(i, url) for i, (_, url) in enumerate(r.views)] or
                 html.P("No view yet: press \"Add to review\" on a compare, search, run or unit page.",
                        className="muted"), id="review-views"),
        widgets.card("Comments", html.Div(comments_list(r), id="review-comments"), comment_box()),
    ])
