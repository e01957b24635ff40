"""The Dash app: constructor, navbar, and `server` for WSGI (gunicorn dashboard.app:server)."""
from pathlib import Path

import dash
from dash import ClientsideFunction, Dash, Input, Output, State, dcc, html

from dashboard.serving import auth, lean_pages

app = Dash(__name__, use_pages=True, pages_folder=str(Path(__file__).parent / "pages"),
           title="MNIST Lab", suppress_callback_exceptions=True)
# The page's language, for screen readers' pronunciation and WCAG 3.1.1 (Dash's index page leaves it out).
app.index_string = app.index_string.replace("<html>", '<html lang="en">', 1)
server = app.server
auth.protect(server)  # a login on every route when DASHBOARD_USER/DASHBOARD_PASSWORD are set
lean_pages.install(app)  # the cartesian plotly.js where a page needs no more, loading from the start

app.layout = html.Div([
    # The theme choice lives in the browser (localStorage): a per-person preference, not part of a shared URL.
    dcc.Store(id="app-theme", storage_type="local", data="light"),
    html.Header([
        dcc.Link("MNIST Lab", href="/", className="brand"),
        html.Nav([dcc.Link("Runs", href="/", className="nav-link"),
                  dcc.Link("Reviews", href="/reviews", className="nav-link")], className="nav"),
        # The palette choice is a cookie (views/theme.safe_colours): figures are drawn on the server.
        html.Button("Colour-blind palette", id="app-palette-toggle", className="theme-toggle palette-toggle", n_clicks=0,
                    title="Draw runs and groups in ten colours that stay apart in every colour vision",
                    **{"aria-pressed": "false"}),
        html.Button("Dark", id="app-theme-toggle", className="theme-toggle", n_clicks=0,
                    title="Switch between light and dark theme"),
    ], className="topbar"),
    html.Main(dash.page_container, className="page"),
])

app.clientside_callback(
    ClientsideFunction(namespace="mnistlab", function_name="toggleTheme"),
    Output("app-theme", "data"), Input("app-theme-toggle", "n_clicks"), State("app-theme", "data"),
    prevent_initial_call=True)
app.clientside_callback(
    ClientsideFunction(namespace="mnistlab", function_name="palette"),
    Output("app-palette-toggle", "aria-pressed"), Input("app-palette-toggle", "n_clicks"))
app.clientside_callback(
    ClientsideFunction(namespace="mnistlab", function_name="applyTheme"),
    Output("app-theme-toggle", "children"), Input("app-theme", "data"))


def _set_up_before_serving() -> None:
    """Dash finishes setting itself up on the first request (it registers the component scripts and takes in
    the callbacks), and marks that done before doing it.  A threaded server (the dashboard's own, or gunicorn
    with --threads) takes several first requests at once, and one served before the setup ended got a 500 ("not
    a registered library"), so the page never drew.  One request now, before any thread serves, does that setup
    once; under gunicorn's `--preload` the workers inherit it."""
    with server.test_client() as client:
        client.get(app.config.requests_pathname_prefix + "_dash-layout")


_set_up_before_serving()
