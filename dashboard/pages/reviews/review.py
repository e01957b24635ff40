"""One review (/reviews/<review id>): its narrative, decision and comments, its views live, and its export.

A save carries the version the page was loaded at (review-version); a stale one is refused in one line and the
editor keeps every character typed.  Comments only append.  The export is one HTML file that opens from disk.
"""
from datetime import datetime

import dash
from dash import Input, Output, State, callback, dcc, no_update

from dashboard.read import reviews
from dashboard.views import widgets
from dashboard.views.reviews import export
from dashboard.views.reviews import review_view as V
from dashboard.views.reviews.add_control import current_user

dash.register_page(__name__, path_template="/reviews/<review_id>",
                   title=lambda review_id=None, **_: f"Review {str(review_id)[:8]} · MNIST Lab")


def layout(review_id=None, **_query):
    try:
        review = reviews.load(review_id)
        missing = reviews.missing_runs(review)
    except reviews.ReviewError as e:
        return widgets.error_page("Review", str(e))
    return V.review_page(review, missing, current_user())


@callback(Output("review-save-status", "children"), Output("review-version", "data"),
          Output("review-narrative-shown", "children"), Output("review-decision-shown", "children"),
          Output("review-meta", "children"), Output("review-heading", "children"),
          Input("review-save", "n_clicks"), State("review-id", "data"), State("review-version", "data"),
          State("review-title", "value"), State("review-narrative", "value"), State("review-decision", "value"),
          State("review-reasons", "value"), State("review-author", "value"), prevent_initial_call=True)
def save(clicks, review_id, version, title, text, decision, reasons, author):
    """The editor's fields are never outputs here: whatever happens, the text typed stays where it is."""
    if not clicks:
        return (no_update,) * 6
    try:
        saved = reviews.save(review_id, int(version), title=title or "", narrative=text or "", decision=decision or "",
                             reasons=reasons or "", author=current_user() or author)
        review = reviews.load(review_id)
    except reviews.ReviewError as e:
        return widgets.message(str(e), "error", id="review-save-refused"), *(no_update,) * 5
    return (f"Saved version {saved} at {datetime.now().strftime('%H:%M:%S')}.", saved, V.narrative_shown(review.narrative),
            V.decision_shown(review), V.meta_line(review), review.title)


@callback(Output("review-comments", "children"), Output("review-comment-text", "value"),
          Output("review-comment-status", "children"),
          Input("review-comment-add", "n_clicks"), State("review-id", "data"), State("review-comment-text", "value"),
          State("review-author", "value"), prevent_initial_call=True)
def comment(clicks, review_id, text, author):
    if not clicks:
        return (no_update,) * 3
    try:
        reviews.add_comment(review_id, text or "", current_user() or author)
        review = reviews.load(review_id)
    except reviews.ReviewError as e:
        return no_update, no_update, widgets.message(str(e), "error")
    return V.comments_list(review), "", None


@callback(Output("review-export", "data"), Output("review-save-status", "children", allow_duplicate=True),
          Input("review-export-button", "n_clicks"), State("review-id", "data"), prevent_initial_call=True)
def download(clicks, review_id):
    if not clicks:
        return (no_update,) * 2
    try:
        page = export.export_html(review_id)
    except reviews.ReviewError as e:
        return no_update, widgets.message(f"No export: {e}", "error")
    return dcc.send_string(page, f"review-{review_id[:8]}.html"), no_update
