"""Runs (/): every run of an experiment in a sortable table, an MLflow filter, and the grid review.

The URL holds the view (`/?experiment=<id>&filter=<mlflow filter>`), so a reload, a bookmark or
back/forward shows the same runs.  While any shown run is RUNNING, an Interval refreshes the
table and figures; it switches itself off when none are.
"""
from urllib.parse import urlencode

import dash
import dash_ag_grid as dag
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard.read import store
from dashboard.views import runs_view as V
from dashboard.views import widgets
from dashboard.views.sweep import sweep_importance as I
from dashboard.views.sweep import sweep_select as S
from training import contract as C

dash.register_page(__name__, path="/", title="Runs · MNIST Lab")

LIVE_MS = 3000
FILTER_EXAMPLE = "params.lr = '3.0' and metrics.test_acc > 0.9"
HEADERS = {C.PARAM_ACTIVATION: "act.", C.PARAM_OPTIMIZER: "optim.", C.PARAM_BATCH_SIZE: "batch"}  # the rest: the name
NARROW = (C.PARAM_LR, C.PARAM_SEED, C.PARAM_BATCH_SIZE, C.PARAM_EPOCHS)  # columns of short numbers


def _summary_columns(frame) -> list[dict]:
    """A column per unit summary the runs carry (training.tracking.layer_summaries), e.g. 'fc1 class-selective units'."""
    return [{"field": V.summary_field(c), "headerName": V.metric_info(c)[0], "width": 130, "type": "numericColumn",
             "headerTooltip": c[len("metrics."):], "valueFormatter": {"function": "params.value == null ? '' : String(+params.value.toFixed(3))"}}
            for c in V.summary_columns(frame)]


def _columns(searches: bool = False) -> list[dict]:
    pct = {"function": "formatPercent(params.value)"}
    num = {"type": "numericColumn"}
    # A search's trials say how they ended: complete, pruned at an epoch, or failed.
    search = [{"field": "search_state", "headerName": "search", "width": 120,
               "headerTooltip": f"tags.{C.TAG_SEARCH_STATE}"}] if searches else []
    return ([{"field": "name", "headerName": "run", "cellRenderer": "RunLink", "minWidth": 300, "flex": 1,
              "tooltipField": "run_id", "filter": True},
             {"field": "status", "width": 105, "cellClass": {"function": "'status-' + params.value"}}]
            + search
            + [{"field": "final_test_acc", "headerName": "final test acc", "valueFormatter": pct, "width": 120, **num},
               {"field": C.BEST_TEST_ACC, "headerName": "best test acc", "valueFormatter": pct, "width": 120, **num}]
            + [{"field": p, "headerName": HEADERS.get(p, p), "width": 80 if p in NARROW else 100} for p in V.KEY_PARAMS]
            + [{"field": "duration_s", "headerName": "duration", "width": 105, **num,
                "valueFormatter": {"function": "formatDuration(params.value)"}},
               {"field": "start_time", "headerName": "start (UTC)", "width": 160, "sort": "desc"}])


def layout(experiment: str | None = None, filter: str | None = None, **_query):  # noqa: A002 (URL key)
    try:
        exps = store.experiments()
    except store.StoreError as e:  # an unreachable store is the user's to fix, not a traceback
        return html.Div([html.H2("Runs"), widgets.message(str(e), "error")])
    ids = [e["id"] for e in exps]
    exp_id = experiment if experiment in ids else (ids[0] if ids else None)
    filter_string = filter or ""
    frame, message = _load(exp_id, filter_string)
    if experiment and experiment not in ids:
        message = f"Experiment '{experiment[:64]}' is not in the store; showing '{exps[0]['name']}'." if exps else message
    params = V.varying_params(frame)
    x, y = V.default_axes(params)
    return html.Div([
        html.H2("Runs"),
        html.Div([
            html.Div(dcc.Dropdown(id="runs-experiment", value=exp_id, clearable=False,
                                  options=[{"label": e["name"], "value": e["id"]} for e in exps]),
                     style={"width": "240px"}),
            dcc.Input(id="runs-filter", type="text", value=filter_string, debounce=True, className="filter-input grow",
                      placeholder=f"MLflow filter, e.g. {FILTER_EXAMPLE}  (Enter to apply)"),
            dcc.Link("Compare", id="runs-compare", href="/compare", className="button button-primary button-disabled"),
        ], className="row"),
        widgets.message(message, "error", id="runs-message"),
        html.Div(id="runs-summary", className="muted small", children=_summary(frame)),
        dag.AgGrid(id="runs-grid", columnDefs=_columns(V.has_search_trials(frame)) + _summary_columns(frame), rowData=V.table_rows(frame),
                   getRowId="params.data.run_id",
                   defaultColDef={"sortable": True, "resizable": True},  # filtering is the MLflow box's job
                   dashGridOptions={"rowSelection": {"mode": "multiRow", "checkboxes": True, "headerCheckbox": True,
                                                     "enableClickSelection": False},
                                    "postSortRows": {"function": "keepChildrenUnderParents(params)"},
                                    "tooltipShowDelay": 600, "animateRows": False,
                                    # One Tab stop, as WAI-ARIA's grid pattern has it: arrows move inside, Space
                                    # ticks a row, and Tab leaves (AG Grid's default walks every cell first).
                                    "tabToNextCell": {"function": "false"}, "tabToNextHeader": {"function": "false"}},
                   style=_grid_style(len(frame)), className="card"),
        html.H3("Grid review"),
        html.Div([widgets.graph(V.parallel_figure(frame, params), "runs-parallel"),
                  html.Div(_notes(frame, params), id="runs-parallel-note"),
                  dcc.Store(id="runs-parallel-brush", data={}),
                  html.Div(id="runs-parallel-selection", className="small")], className="card"),
        html.Div([
            html.Div([
                html.Span("Heatmap:", className="muted"),
                dcc.Dropdown(id="runs-heat-metric", clearable=False, style={"width": "210px"},
                             options=V.metric_options(frame),
                             value="final_test_acc"),
                html.Span("by y", className="muted"),
                dcc.Dropdown(id="runs-heat-y", options=params, value=y, clearable=False, style={"width": "150px"}),
                html.Span("and x", className="muted"),
                dcc.Dropdown(id="runs-heat-x", options=params, value=x, clearable=False, style={"width": "150px"}),
            ], className="row small"),
            widgets.graph(V.heatmap_figure(frame, x, y), "runs-heatmap"),
            html.Div(_notes(frame, [x, y]), id="runs-heatmap-note"),
        ], className="card"),
        html.Div([html.H4("Which hyperparameters matter? (for the heatmap's metric)", style={"marginTop": 0}),
                  html.Div(I.section(frame, "final_test_acc"), id="runs-importance")], className="card"),
        dcc.Interval(id="runs-live", interval=LIVE_MS, disabled=not V.any_running(frame)),
    ])


def _load(experiment_id, filter_string):
    if experiment_id is None:
        return V.add_summaries(store.runs_frame([]), store.metric_histories([], [])), "The store has no experiments yet."
    try:
        return V.load_runs(experiment_id, filter_string), ""
    except store.StoreError as e:
        return V.add_summaries(store.runs_frame([]), store.metric_histories([], [])), str(e)


def _notes(frame, params: list, metric: str = "final_test_acc") -> list:
    """Under a grid-review figure: one line per reason some runs are not on it (none when it draws nothing)."""
    if not params or not all(params) or len(set(params)) < len(params):
        return []
    _, notes = V.usable_runs(frame, params, metric)
    return [widgets.message(n, "warn") for n in notes]


def _grid_style(n_rows: int) -> dict:
    """Tall enough for the rows up to ~12 of them, then it scrolls: no empty band under a short list."""
    return {"height": f"{min(max(n_rows, 3), 12) * 42 + 60}px"}


def _summary(frame) -> str:
    if frame.empty:
        return "No runs match."
    running = int((frame["status"] == C.STATUS_RUNNING).sum())
    return f"{len(frame)} runs" + (f", {running} running (updating live)" if running else "") + ". Tick runs, then Compare."


@callback(Output("_pages_location", "search", allow_duplicate=True),
          Input("runs-experiment", "value"), Input("runs-filter", "value"), State("_pages_location", "search"),
          prevent_initial_call=True)
def put_view_in_url(experiment_id, filter_string, search):
    """Experiment and filter go into the URL; the page then re-renders from it (so reload and back/forward agree)."""
    query = dict(experiment=experiment_id or "")
    if filter_string and filter_string.strip():
        query["filter"] = filter_string.strip()
    new = "?" + urlencode(query)
    return no_update if new == search else new


@callback(Output("runs-compare", "href"), Output("runs-compare", "className"), Output("runs-compare", "children"),
          Input("runs-grid", "selectedRows"))
def compare_link(selected):
    ids = [r["run_id"] for r in selected or [] if not r.get("is_parent")]
    enabled = "button button-primary" + ("" if ids else " button-disabled")
    return ("/compare?runs=" + ",".join(ids) if ids else "/compare"), enabled, (f"Compare {len(ids)}" if ids else "Compare")


@callback(Output("runs-heatmap", "figure"), Output("runs-heatmap-note", "children"),
          Input("runs-heat-x", "value"), Input("runs-heat-y", "value"), Input("runs-heat-metric", "value"),
          State("runs-experiment", "value"), State("runs-filter", "value"), prevent_initial_call=True)
def heatmap(x, y, metric, experiment_id, filter_string):
    frame, _ = _load(experiment_id, filter_string or "")
    return V.heatmap_figure(frame, x, y, metric), _notes(frame, [x, y], metric)


@callback(Output("runs-grid", "rowData"), Output("runs-parallel", "figure"), Output("runs-heatmap", "figure",
                                                                                     allow_duplicate=True),
          Output("runs-summary", "children"), Output("runs-live", "disabled"), Output("runs-grid", "style"),
          Output("runs-parallel-note", "children"), Output("runs-heatmap-note", "children", allow_duplicate=True),
          Input("runs-live", "n_intervals"),
          State("runs-experiment", "value"), State("runs-filter", "value"),
          State("runs-heat-x", "value"), State("runs-heat-y", "value"), State("runs-heat-metric", "value"),
          prevent_initial_call=True)
def live(_n, experiment_id, filter_string, x, y, metric):
    frame, _ = _load(experiment_id, filter_string or "")
    params = V.varying_params(frame)
    return (V.table_rows(frame), V.parallel_figure(frame, params), V.heatmap_figure(frame, x, y, metric),
            _summary(frame), not V.any_running(frame), _grid_style(len(frame)), _notes(frame, params),
            _notes(frame, [x, y], metric))


@callback(Output("_pages_location", "href", allow_duplicate=True), Input("runs-heatmap", "clickData"),
          prevent_initial_call=True)
def open_cell(click):
    """A heatmap cell opens its run, or the compare page of its runs."""
    return S.cell_href(click) or no_update


@callback(Output("runs-parallel-brush", "data"), Output("runs-parallel-selection", "children"),
          Input("runs-parallel", "restyleData"), State("runs-parallel-brush", "data"),
          State("runs-experiment", "value"), State("runs-filter", "value"), prevent_initial_call=True)
def brushed(restyle, kept, experiment_id, filter_string):
    """Brushes on the parallel coordinates list the runs they keep, each a link (parcoords has no clicks)."""
    constraints = S.merge_constraints(kept, restyle)
    frame, _ = _load(experiment_id, filter_string or "")
    ids = S.selected_runs(frame, V.varying_params(frame), constraints)
    return constraints, _selection(frame, ids)


def _selection(frame, ids):
    if ids is None:
        return []
    if not ids:
        return widgets.message("No run passes every brushed axis.", "info")
    names = dict(zip(frame["run_id"], frame["name"].fillna(""))) if not frame.empty else {}
    links = [dcc.Link(f"{names.get(rid) or ''} {rid[:8]}".strip(), href=f"/runs/{rid}", className="run-link sweep-pick")
             for rid in ids[:S.MAX_LISTED]]
    more = f" and {len(ids) - S.MAX_LISTED} more" if len(ids) > S.MAX_LISTED else ""
    compare = dcc.Link(f"compare these {len(ids)}", href=S.href_for(ids), id="runs-parallel-compare") \
        if len(ids) > 1 else None
    return html.Div([html.Span(f"Brushed: {len(ids)} run{'s' if len(ids) != 1 else ''}: ", className="muted"),
                     *[html.Span([link, " · "]) for link in links], more, compare], className="row")


@callback(Output("runs-importance", "children"), Input("runs-heat-metric", "value"),
          State("runs-experiment", "value"), State("runs-filter", "value"), prevent_initial_call=True)
def importance(metric, experiment_id, filter_string):
    frame, _ = _load(experiment_id, filter_string or "")
    return I.section(frame, metric)
