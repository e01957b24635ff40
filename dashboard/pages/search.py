"""Search review (/search/<parent run id>): an Optuna search's trials, as optuna.visualization draws them.

The loader (dashboard.loaders.search_trials) reads the parent and its trial runs once and rebuilds the
study; the figures come from views/sweep/search_review.py.  While the parent is RUNNING an Interval
re-renders the page's body, and switches itself off when the search ends.  A click on a trial's point
opens its run.
"""
import dash
from dash import Input, Output, State, callback, ctx, dcc, html, no_update

from dashboard.read import store
from dashboard.views import widgets
from dashboard.views.reviews import add_control
from dashboard.views.sweep import sweep_select

dash.register_page(__name__, path_template="/search/<run_id>",
                   title=lambda run_id=None, **_: f"Search {str(run_id)[:8]} · MNIST Lab")

LIVE_MS = 3000
CLICKABLE = ("search-history", "search-intermediate", "search-slice")


def _card(title, note, body) -> html.Div:
    return html.Div([html.H3(title, style={"marginTop": 0}), html.P(note, className="run-note") if note else None,
                     body], className="card")


def _summary(search) -> str:
    counts = {}
    for t in search.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    done = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return (f"{search.status.lower()} · {search.sampler} sampler · {search.pruner} pruner · {search.direction} "
            f"{search.metric} · {len(search.trials)} of {search.n_trials} trials" + (f": {done}" if done else ""))


def _load(run_id):
    # Imported here: Optuna (and its plots) would add 0.6 s to every start of the dashboard, for one page.
    from dashboard.loaders import search_trials
    return search_trials.load(run_id)


def body(search) -> list:
    from dashboard.views.sweep import search_review as R
    best = search.best_run_id
    return [
        html.H2(f"Search {search.name}", style={"marginBottom": "2px"}),
        html.Div(_summary(search), id="search-summary", style={"opacity": 0.8, "fontSize": "13px"}),
        html.Div([dcc.Link("Parent run →", href=f"/runs/{search.run_id}"),
                  dcc.Link("Best trial →", href=f"/runs/{best}", id="search-best") if best else None,
                  html.Code(search.run_id, className="muted", style={"fontSize": "12px"})],
                 style={"display": "flex", "gap": "18px", "alignItems": "center", "margin": "8px 0"}),
        *[widgets.message(n, "warn") for n in search.notes],
        _card("Optimisation history", "Each complete trial's final metric, and the best so far. Click a point to "
              "open its run.", widgets.graph(R.history_figure(search), "search-history")),
        _card("Trials per epoch", "Each trial's metric after every epoch; an x marks where the pruner stopped a "
              "trial.", widgets.graph(R.intermediate_figure(search), "search-intermediate")),
        _card("Which parameters matter?", "Optuna's fANOVA beside the runs page's random forest, over the "
              "complete trials.", R.importance_panels(search)),
        _card("Slice", "The final metric against each searched parameter.",
              widgets.graph(R.slice_figure(search), "search-slice")),
        _card("Contour", "The final metric over each pair of searched parameters.",
              widgets.graph(R.contour_figure(search), "search-contour")),
        _card("Trials", None, R.trial_table(search)),
    ]


def layout(run_id=None, **_query):
    try:
        search = _load(run_id)
    except store.StoreError as e:
        return widgets.error_page("Search not found", f"{e}.")
    return html.Div([
        dcc.Store(id="search-id", data=run_id),
        add_control.control("search"),
        html.Div(body(search), id="search-body"),
        dcc.Interval(id="search-live", interval=LIVE_MS, disabled=not search.running),
    ])


@callback(Output("search-body", "children"), Output("search-live", "disabled"),
          Input("search-live", "n_intervals"), State("search-id", "data"), prevent_initial_call=True)
def live(_n, run_id):
    try:
        search = _load(run_id)
    except store.StoreError as e:
        return widgets.message(f"{e}.", "error"), True
    return body(search), not search.running


@callback(Output("_pages_location", "href", allow_duplicate=True),
          *[Input(g, "clickData") for g in CLICKABLE], prevent_initial_call=True)
def open_trial(*_clicks):
    """A click on a trial's point opens its run: the first point under the mouse that names one (a trial's
    marker and the best-so-far line can share a place)."""
    value = ctx.triggered[0]["value"] if ctx.triggered else None  # a browser's input: any JSON at all
    points = value.get("points") if isinstance(value, dict) else None
    for point in points if isinstance(points, list) else []:
        if href := sweep_select.cell_href({"points": [point]}):
            return href
    return no_update
