"""The Dash app: constructor, navbar, and `server` for WSGI (gunicorn dashboard.app:server)."""
from pathlib import Path

import dash
from dash import Dash, dcc, html

app = Dash(__name__, use_pages=True, pages_folder=str(Path(__file__).parent / "pages"),
           title="MNIST Lab", suppress_callback_exceptions=True)
server = app.server

app.layout = html.Div([
    html.Header([
        dcc.Link("MNIST Lab", href="/", className="brand"),
        html.Nav([dcc.Link("Runs", href="/")], className="nav"),
    ], className="topbar"),
    html.Main(dash.page_container, className="page"),
])
