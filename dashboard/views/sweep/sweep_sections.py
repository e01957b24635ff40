"""The compare page's review section: the verdict sentence, fixed and broken counts and galleries, the
confusion-matrix difference, and the link to the neurons across runs.

Built from a compare_view.Comparison; the epoch dropdown (`compare-epoch`) is always in the layout, hidden
when there is nothing to review, so the page's one URL callback always has its inputs.
"""
from dash import dcc, html

from dashboard.read import store
from dashboard.views import widgets
from dashboard.views.sweep import sweep_review as SR


def _epoch_picker(review) -> html.Div:
    epochs = review.epochs if review else []
    return html.Div([
        html.Span("Per-image review at epoch", className="muted"),
        dcc.Dropdown(id="compare-epoch", options=[{"label": str(e), "value": e} for e in epochs],
                     value=review.epoch if review else None, clearable=False, style={"width": "110px"}),
    ], className="row small", style={} if epochs else {"display": "none"})


def review_section(comp, groups, epoch) -> html.Div:
    """Everything under the metrics table that compares exactly two runs or two configs."""
    try:
        review = SR.load_review(comp, groups, epoch)
    except store.StoreError as e:
        return html.Div([_epoch_picker(None), widgets.message(str(e), "error")])
    if review is None:
        return html.Div([_epoch_picker(None), neurons_link(comp)])
    parts = [html.H3(f"Is it real? A = {review.name_a}, B = {review.name_b}"), _epoch_picker(review),
             *[widgets.message(s, "info") for s in review.sentences],
             *[widgets.message(n, "warn") for n in review.notes]]
    if review.diff is not None:
        parts += [_counts(review), html.Div([
            html.Div([html.H4(f"Fixed: A wrong, B right ({review.pair.fixed})"),
                      SR.gallery(review, review.diff.fixed)], className="card", id="compare-fixed"),
            html.Div([html.H4(f"Broken: A right, B wrong ({review.pair.broken})"),
                      SR.gallery(review, review.diff.broken)], className="card", id="compare-broken"),
        ], className="grid-2"), html.Div(widgets.graph(SR.confusion_delta_figure(review), "compare-confusion-delta"),
                                          className="card")]
    parts.append(neurons_link(comp))
    return html.Div(parts, id="compare-review")


def _counts(review) -> html.Div:
    p = review.pair
    return html.Div([
        html.Span(["fixed ", html.B(str(p.fixed), id="compare-fixed-count")]),
        html.Span(["broken ", html.B(str(p.broken), id="compare-broken-count")]),
        html.Span(f"both right {p.both_right}", className="muted"),
        html.Span(f"both wrong {p.both_wrong}", className="muted"),
        html.Span(f"exact McNemar p = {p.p_value:.4g}", id="compare-mcnemar-p"),
        html.Span(f"(epoch {review.epoch}; 10,000 test images)", className="muted"),
    ], className="row card", style={"gap": "20px"})


def neurons_link(comp) -> html.Div | None:
    """To the neurons across runs of these runs, from their first hidden layer at their last common epoch."""
    if len(comp.runs) < 2:
        return None
    ids = ",".join(r.info.run_id for r in comp.runs)
    return html.Div(dcc.Link("Neurons across these runs →", href=f"/compare/neurons?runs={ids}&layer=1",
                             id="compare-neurons-link"), style={"margin": "12px 0"})
