"""Reviews (/reviews): every review the team keeps, the latest updated first, and a form to start one."""
import dash
from dash import Input, Output, State, callback, html, no_update

from dashboard.read import reviews
from dashboard.views import widgets
from dashboard.views.reviews import review_view as V
from dashboard.views.reviews.add_control import current_user

dash.register_page(__name__, path="/reviews", title="Reviews · MNIST Lab")


def layout(**_query):
    try:
        table = V.list_table(reviews.list_reviews())
    except reviews.ReviewError as e:
        table = widgets.message(str(e), "error")
    return html.Div([html.H2("Reviews"),
                     html.P("A review keeps what a team concluded, on which evidence: a narrative, live views of "
                            "the dashboard, a decision and its reasons, and comments. Each is a run of the "
                            "MLflow experiment 'reviews', so MLflow's UI shows it too.", className="muted"),
                     html.Div(table, className="card table-scroll"), V.new_review_form()])


@callback(Output("_pages_location", "href", allow_duplicate=True), Output("reviews-new-status", "children"),
          Input("reviews-new", "n_clicks"), State("reviews-new-title", "value"), prevent_initial_call=True)
def create(clicks, title):
    if not clicks:  # the button appearing is no press (Dash may call this as the page renders)
        return no_update, no_update
    try:
        review_id = reviews.create(title or "", current_user())
    except reviews.ReviewError as e:
        return no_update, widgets.message(str(e), "error")
    return f"/reviews/{review_id}", None
