"""Runs (/): every run of an experiment in a sortable, filterable table."""
import dash
import dash_ag_grid as dag
from dash import Input, Output, callback, dcc, html

from dashboard import store

dash.register_page(__name__, path="/", title="Runs · MNIST Lab")

KEY_PARAMS = ["arch", "activation", "loss", "optimizer", "lr", "batch_size", "epochs", "seed"]


def runs_table_rows(experiment_id: str, filter_string: str = "") -> list[dict]:
    df = store.runs_frame(store.search_runs([experiment_id], filter_string))
    if df.empty:
        return []
    out = df[["run_id", "name", "status"]].copy()
    for p in KEY_PARAMS:
        out[p] = df.get(f"params.{p}")
    out["test_acc"] = df.get("metrics.test_acc")
    return out.to_dict("records")


def layout(**_query):
    exps = store.experiments()
    return html.Div([
        html.H2("Runs"),
        dcc.Dropdown(id="runs-experiment", options=[{"label": e["name"], "value": e["id"]} for e in exps],
                     value=exps[0]["id"] if exps else None, clearable=False),
        dag.AgGrid(id="runs-grid",
                   columnDefs=[{"field": "name"}, {"field": "status"}]
                   + [{"field": p} for p in KEY_PARAMS]
                   + [{"field": "test_acc", "valueFormatter": {"function": "d3.format('.2%')(params.value)"}}],
                   defaultColDef={"sortable": True, "filter": True, "resizable": True},
                   rowData=[], getRowId="params.data.run_id", style={"height": "70vh"}),
    ])


@callback(Output("runs-grid", "rowData"), Input("runs-experiment", "value"))
def show_runs(experiment_id):
    return runs_table_rows(experiment_id) if experiment_id else []
