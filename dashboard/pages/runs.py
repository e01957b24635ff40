"""Runs (/): every run of an experiment in a sortable table, an MLflow filter, and the grid review.

The URL holds the view (`/?experiment=<id>&filter=<mlflow filter>`), so a reload, a bookmark or
back/forward shows the same runs.  The table is paged from the server (dashboard.views.runs_table) and
the figures follow once the view is read (dashboard.read.run_index).  While any run of the view is
RUNNING, an Interval brings it up to date; it switches itself off when none is.
"""
from urllib.parse import urlencode

import dash
import dash_ag_grid as dag
import pandas as pd
from dash import Input, Output, State, callback, clientside_callback, dcc, html, no_update

from dashboard.read import cache, store
from dashboard.views import compare_view
from dashboard.views import runs_table as T
from dashboard.views import runs_view as V
from dashboard.views import widgets
from dashboard.views.sweep import sweep_importance as I
from dashboard.views.sweep import sweep_select as S
from training import contract as C

dash.register_page(__name__, path="/", title="Runs · MNIST Lab")

LIVE_MS = 3000  # while a run of the view is RUNNING
READ_POLL_MS = 500  # while the view is read: progress, then the figures as soon as it is done
BLOCK = 100  # rows per request as the table scrolls
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
    """The page at once, with no run read but a one-run search that checks the filter: the table asks for
    its rows (`rows`), and the figures follow once the view is read (`refresh`)."""
    try:
        exps = store.experiments()
    except store.StoreError as e:  # an unreachable store is the user's to fix, not a traceback
        return html.Div([html.H2("Runs"), widgets.message(str(e), "error")])
    ids = [e["id"] for e in exps]
    exp_id = experiment if experiment in ids else (ids[0] if ids else None)
    filter_string = filter or ""
    message = "" if exp_id else "The store has no experiments yet."
    if exp_id:
        try:
            store.search_page([exp_id], filter_string, 1)
        except store.StoreError as e:
            message = str(e)
    if experiment and experiment not in ids:
        message = f"Experiment '{experiment[:64]}' is not in the store; showing '{exps[0]['name']}'." if exps else message
    v = V.view(exp_id, filter_string) if exp_id and not message else None  # its read starts now
    frame = v.frame if v is not None and v.ready else None
    return html.Div([
        html.H2("Runs"),
        html.Div([
            html.Div(dcc.Dropdown(id="runs-experiment", value=exp_id, clearable=False,
                                  options=[{"label": e["name"], "value": e["id"]} for e in exps]),
                     style={"width": "240px"}),
            dcc.Input(id="runs-filter", type="text", value=filter_string, debounce=True, className="filter-input grow",
                      placeholder=f"MLflow filter, e.g. {FILTER_EXAMPLE}  (Enter to apply)"),
            dcc.Checklist(id="runs-all", options=[{"label": " all of this view", "value": "all"}], value=[],
                          className="small", inputStyle={"marginRight": "4px"}),
            dcc.Link("Compare", id="runs-compare", href="/compare", className="button button-primary button-disabled"),
        ], className="row"),
        widgets.message(message, "error", id="runs-message"),
        html.Div(id="runs-summary", className="muted small",
                 children=_summary(frame) if frame is not None else ("" if message else "Reading the runs…")),
        _grid(frame),
        # The view as the page has it: set here when this worker has it read, else by the first tick after
        # its read.  A new one makes the table fetch its blocks again and `figures` draw.
        dcc.Store(id="runs-version", data=_version(v) if frame is not None else None),
        dcc.Store(id="runs-first", data=False),  # whether the table shows rows from before the view was read
        dcc.Store(id="runs-served", data=False),  # set once the table has its first rows: then `figures` draws
        html.H3("Grid review"),
        # Drawn by `figures` after the table's first rows, even when the view is read: the importance forest
        # alone takes a second at 10,000 runs, and the page would wait on it.
        html.Div(_review(), id="runs-review"),
        dcc.Interval(id="runs-live", interval=READ_POLL_MS, disabled=bool(message)),
    ])


GRID_OPTIONS = {
    "rowSelection": {"mode": "multiRow", "checkboxes": True, "headerCheckbox": False, "enableClickSelection": False},
    # Blocks of BLOCK rows, asked of the server as the table scrolls, one at a time: dash-ag-grid answers
    # only the latest request it was given.
    "cacheBlockSize": BLOCK, "maxConcurrentDatasourceRequests": 1, "blockLoadDebounceMillis": 50,
    "infiniteInitialRowCount": 1, "tooltipShowDelay": 600, "animateRows": False,
    # One Tab stop, as WAI-ARIA's grid pattern has it: arrows move inside, Space ticks a row, and Tab leaves
    # (AG Grid's default walks every cell first).
    "tabToNextCell": {"function": "false"}, "tabToNextHeader": {"function": "false"}}


def _grid(frame) -> dag.AgGrid:
    """The runs table, paged from the server (`rows`); its columns from the view when it is read already."""
    shown = frame if frame is not None else pd.DataFrame()
    return dag.AgGrid(id="runs-grid", columnDefs=_columns(V.has_search_trials(shown)) + _summary_columns(shown),
                      rowModelType="infinite", getRowId="params.data.run_id",
                      defaultColDef={"sortable": True, "resizable": True},  # filtering is the MLflow box's job
                      dashGridOptions=GRID_OPTIONS, className="card",
                      style=_grid_style(len(frame) if frame is not None else 12))


WAIT = "Reading the runs: the figures follow once every run of this view is read."


def _placeholder() -> html.Div:
    """Where a figure will be, the height it will take.  Text, not an empty Plotly chart: a chart in the
    first render loads and runs plotly.js (4.8 MB) before the table's first rows."""
    return html.Div(WAIT, className="muted figure-placeholder")


def _review() -> list:
    """The grid-review cards, as placeholders: `figures` draws parallel coordinates, the heatmap (its axes
    and metric picked here) and the importance section once the view is read."""
    return [
        html.Div([html.Div(_placeholder(), id="runs-parallel-box"), html.Div(id="runs-parallel-note"),
                  dcc.Store(id="runs-parallel-brush", data={}),
                  html.Div(id="runs-parallel-selection", className="small")], className="card"),
        html.Div([
            html.Div([
                html.Span("Heatmap:", className="muted"),
                dcc.Dropdown(id="runs-heat-metric", clearable=False, style={"width": "210px"},
                             options=V.metric_options(pd.DataFrame()), value="final_test_acc"),
                html.Span("by y", className="muted"),
                dcc.Dropdown(id="runs-heat-y", options=[], value=None, clearable=False, style={"width": "150px"}),
                html.Span("and x", className="muted"),
                dcc.Dropdown(id="runs-heat-x", options=[], value=None, clearable=False, style={"width": "150px"}),
            ], className="row small"),
            html.Div(_placeholder(), id="runs-heatmap-box"), html.Div(id="runs-heatmap-note"),
        ], className="card"),
        html.Div([html.H4("Which hyperparameters matter? (for the heatmap's metric)", style={"marginTop": 0}),
                  html.Div(id="runs-importance")], className="card"),
    ]


def _version(v) -> str:
    """What the page last drew: the view's content, which gunicorn workers that read the same runs agree on
    (each keeps its own view), so a tick answered by another worker redraws nothing."""
    return v.digest


def _frame(experiment_id, filter_string):
    """The view's frame for a callback after the page drew it: read now if this worker has not yet."""
    v = V.view(experiment_id, filter_string or "", wait=True)
    if not v.ready:  # a view that was read keeps serving when a later re-read fails
        raise store.StoreError(v.error or "the runs could not be read")
    return v.frame


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
    return f"{len(frame):,} runs" + (f", {running} running (updating live)" if running else "") + ". Tick runs, then Compare."


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


@callback(Output("runs-grid", "getRowsResponse"), Output("runs-first", "data"), Output("runs-served", "data"),
          Input("runs-grid", "getRowsRequest"), State("runs-experiment", "value"), State("runs-filter", "value"),
          State("runs-served", "data"), prevent_initial_call=True)
def rows(request, experiment_id, filter_string, served):
    """One block of the table, sorted here: from the view once it is read, else from one MLflow search page."""
    block, first = _block(request, experiment_id, filter_string)
    return block, first, (no_update if served or block is no_update else True)


def _block(request, experiment_id, filter_string):
    if not request:
        return no_update, no_update
    if not experiment_id:
        return {"rowData": [], "rowCount": 0}, False
    start, end = int(request.get("startRow") or 0), int(request.get("endRow") or BLOCK)
    sort_model = request.get("sortModel") or None
    # Brought up to date here too: with several gunicorn workers, the worker that answers a block is not
    # always the one whose `refresh` saw a run end, and a block from a stale view would show it RUNNING.
    v = V.view(experiment_id, filter_string or "", refresh=True)
    if v.error and not v.ready:
        return {"rowData": [], "rowCount": 0}, False
    if v.ready:
        frame = _ordered(v, sort_model)
        return {"rowData": T.rows(frame.iloc[start:end]), "rowCount": len(frame)}, False
    try:
        first, complete = T.first_rows(experiment_id, filter_string or "", sort_model, end)
    except store.StoreError:
        return {"rowData": [], "rowCount": 0}, False
    return {"rowData": first[start:end], "rowCount": len(first) if complete else -1}, True


_orders = cache.LRU(8)  # (view, version, sort) -> the view's frame through family, sorted


def _ordered(v, sort_model):
    key = (v.key, v.version, repr(sort_model))
    hit = _orders.get(key)
    if hit is None:
        hit = _orders.put(key, T.order(T.family(v.frame), sort_model))
    return hit


@callback(Output("runs-version", "data"), Output("runs-summary", "children"), Output("runs-live", "interval"),
          Output("runs-live", "disabled"), Output("runs-message", "children"),
          Input("runs-live", "n_intervals"),
          State("runs-experiment", "value"), State("runs-filter", "value"), State("runs-version", "data"),
          State("runs-first", "data"), prevent_initial_call=True)
def refresh(_n, experiment_id, filter_string, shown, first):
    """While the view is read: its progress.  Once read, and whenever it changes (a run starts or ends): a new
    version, on which the table fetches its blocks again (keeping its scroll) and `figures` draws.  Light on
    purpose: Dash drops an answer once the Interval has fired again, so this must answer within a tick."""
    if not experiment_id:
        return no_update, no_update, no_update, True, no_update
    v = V.view(experiment_id, filter_string or "", refresh=True)
    if v.error and not v.ready:
        return no_update, "", no_update, True, v.error
    if not v.ready:
        return no_update, f"Reading the runs… {v.progress:,} so far.", READ_POLL_MS, False, no_update
    version = _version(v) + (":first" if first and shown == _version(v) else "")  # redraw rows from before the read
    return (no_update if version == shown else version), _summary(v.frame), LIVE_MS, not V.any_running(v.frame), \
        no_update


@callback(Output("runs-grid", "columnDefs"), Output("runs-grid", "style"), Output("runs-parallel-box", "children"),
          Output("runs-parallel-note", "children"), Output("runs-heat-x", "options"), Output("runs-heat-x", "value"),
          Output("runs-heat-y", "options"), Output("runs-heat-y", "value"), Output("runs-heat-metric", "options"),
          Output("runs-heatmap-box", "children"),
          Output("runs-heatmap-note", "children", allow_duplicate=True),
          Output("runs-importance", "children", allow_duplicate=True),
          Input("runs-version", "data"), Input("runs-served", "data"),
          State("runs-experiment", "value"), State("runs-filter", "value"), State("runs-heat-x", "value"),
          State("runs-heat-y", "value"), State("runs-heat-metric", "value"), prevent_initial_call=True)
def figures(version, served, experiment_id, filter_string, x, y, metric):
    """The grid review and the table's columns, from the view as it is now: after the table's first rows
    (its CPU goes to them first), and again whenever the view changes."""
    if not version or not served:  # not read yet: the tick that sees it read sets the version
        return (no_update,) * 12
    try:
        frame = _frame(experiment_id, filter_string)
    except store.StoreError:
        return (no_update,) * 12
    params = V.varying_params(frame)
    if x not in params or y not in params:
        x, y = V.default_axes(params)
    metric = metric if metric in frame.columns else "final_test_acc"
    return (_columns(V.has_search_trials(frame)) + _summary_columns(frame), _grid_style(len(frame)),
            widgets.graph(V.parallel_figure(frame, params), "runs-parallel"), _notes(frame, params), params, x,
            params, y, V.metric_options(frame), widgets.graph(V.heatmap_figure(frame, x, y, metric), "runs-heatmap"),
            _notes(frame, [x, y], metric), I.section(frame, metric))


# A new version of the view: the table asks for its blocks again, where it is scrolled to.
clientside_callback(
    """function (version) {
        if (version) { dash_ag_grid.getApiAsync("runs-grid").then((api) => api.refreshInfiniteCache()); }
        return window.dash_clientside.no_update;
    }""",
    Output("runs-grid", "id"), Input("runs-version", "data"), prevent_initial_call=True)


@callback(Output("runs-compare", "href"), Output("runs-compare", "className"), Output("runs-compare", "children"),
          Input("runs-grid", "selectedRows"), Input("runs-all", "value"),
          State("runs-experiment", "value"), State("runs-filter", "value"))
def compare_link(selected, everything, experiment_id, filter_string):
    """The ticked runs; with "all of this view", every run the filter selects (the compare page takes the
    first of them it can show), not only the rows loaded so far."""
    if everything and experiment_id:
        v = V.view(experiment_id, filter_string or "", wait=True)
        frame = _ordered(v, None) if v.ready else None
        ids = [] if frame is None or frame.empty else \
            frame.loc[~frame["is_grid_parent"].fillna(False).astype(bool), "run_id"].tolist()
        shown = ids[:compare_view.MAX_RUNS]
        label = f"Compare {len(shown)}" + (f" of {len(ids):,}" if len(ids) > len(shown) else "")
    else:
        shown = [r["run_id"] for r in selected or [] if not r.get("is_parent")]
        label = f"Compare {len(shown)}" if shown else "Compare"
    enabled = "button button-primary" + ("" if shown else " button-disabled")
    return ("/compare?runs=" + ",".join(shown) if shown else "/compare"), enabled, label


@callback(Output("runs-heatmap", "figure"), Output("runs-heatmap-note", "children"),
          Input("runs-heat-x", "value"), Input("runs-heat-y", "value"), Input("runs-heat-metric", "value"),
          State("runs-experiment", "value"), State("runs-filter", "value"), prevent_initial_call=True)
def heatmap(x, y, metric, experiment_id, filter_string):
    try:
        frame = _frame(experiment_id, filter_string)
    except store.StoreError:  # a view that cannot be read (its message is on the page): nothing to redraw
        return no_update, no_update
    return V.heatmap_figure(frame, x, y, metric), _notes(frame, [x, y], metric)


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
    try:
        frame = _frame(experiment_id, filter_string)
    except store.StoreError:  # e.g. a figure of the last view, arriving after a bad filter was applied
        return no_update, no_update
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
    try:
        frame = _frame(experiment_id, filter_string)
    except store.StoreError:
        return no_update
    return I.section(frame, metric)
