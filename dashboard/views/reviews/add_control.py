""""Add to review": a control on the compare, search, unit and run pages that embeds the page's own address,
state and all, in a new review or an existing one.

The address is read in the browser when the button is pressed (window.location): pages such as the unit page
keep their epoch in it with history.replaceState, which Dash's own location never sees.  The list of reviews is
read when the control is opened, so a page that nobody adds to asks the store nothing more.
"""
import flask
from dash import Input, Output, State, callback, clientside_callback, dcc, html, no_update

from dashboard.read import reviews
from dashboard.serving import auth

PAGES = ("compare", "search", "unit", "run")
NEW = "__new__"


def current_user() -> str | None:
    """The signed-in user under basic auth, else None (the review page then asks for a name)."""
    try:
        if auth.credentials() is None or not flask.has_request_context():
            return None
    except auth.AuthConfigError:
        return None
    given = flask.request.authorization
    return given.username if given is not None and given.username else None


def _id(page: str, part: str) -> str:
    return f"{page}-review-{part}"


def control(page: str) -> html.Div:
    """The closed control: one button; it opens the picker below it."""
    assert page in PAGES, page
    return html.Div([
        html.Button("Add to review…", id=_id(page, "open"), n_clicks=0, className="button",
                    title="Keep this view, as it is now, in a review"),
        html.Div([
            html.Label("Review", htmlFor=_id(page, "target"), className="small muted"),
            html.Div(dcc.Dropdown(id=_id(page, "target"), options=[], value=NEW, clearable=False),
                     style={"width": 300}),
            html.Label("Title of the new review", htmlFor=_id(page, "title"), className="small muted"),
            dcc.Input(id=_id(page, "title"), type="text", maxLength=reviews.TITLE_MAX, className="text-input",
                      placeholder="e.g. Which learning rate?"),
            html.Button("Add this view", id=_id(page, "go"), n_clicks=0, className="button-primary"),
        ], id=_id(page, "panel"), className="row", style={"display": "none"}),
        dcc.Store(id=_id(page, "url")),
        html.Div(id=_id(page, "status"), className="small", role="status"),
    ], className="review-add", style={"margin": "0 0 12px"})


def options() -> list[dict]:
    return [{"label": "＋ a new review", "value": NEW}] + [
        {"label": r.title or r.review_id[:8], "value": r.review_id} for r in reviews.list_reviews()]


def add_here(target: str, title: str, url: str) -> tuple[str, str]:
    """(review id, the path kept): the view added to the review chosen, or to a new one."""
    if not target or target == NEW:
        return reviews.create(title or "Untitled review", current_user(), first_view=url), reviews.view_path(url)
    return target, reviews.add_view(target, url)


def _register(page: str) -> None:
    @callback(Output(_id(page, "panel"), "style"), Output(_id(page, "target"), "options"),
              Input(_id(page, "open"), "n_clicks"), prevent_initial_call=True)
    def open_picker(_clicks):
        try:
            return {"display": "flex"}, options()
        except reviews.ReviewError as e:
            return {"display": "flex"}, [{"label": f"＋ a new review ({e})", "value": NEW}]

    clientside_callback(
        "function (n) { return n ? {url: window.location.pathname + window.location.search, n: n}"
        " : window.dash_clientside.no_update; }",
        Output(_id(page, "url"), "data"), Input(_id(page, "go"), "n_clicks"), prevent_initial_call=True)

    @callback(Output(_id(page, "status"), "children"), Output(_id(page, "panel"), "style", allow_duplicate=True),
              Input(_id(page, "url"), "data"), State(_id(page, "target"), "value"), State(_id(page, "title"), "value"),
              prevent_initial_call=True)
    def add(data, target, title):
        url = data.get("url") if isinstance(data, dict) else None
        if not isinstance(url, str):
            return no_update, no_update
        try:
            review_id, path = add_here(target, title, url)
        except reviews.ReviewError as e:
            return html.Span(str(e), className="message message-error"), no_update
        return html.Span(["Added ", html.Code(path[:80]), " to ",
                          dcc.Link("the review →", href=f"/reviews/{review_id}", id=_id(page, "link"))]), \
            {"display": "none"}


for _page in PAGES:
    _register(_page)
