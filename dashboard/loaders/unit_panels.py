"""What the unit page shows for one unit at one epoch, loaded from the neuron statistics and built.

The loader half of the unit page: given the run as the page resolved it once (neuron_target.Target), it
reads dashboard.loaders.neuron_stats and deep_neurons (cached) and hands arrays to the pure builders in
neuron_figures, neuron_images and unit_report.
"""
import functools

from dash import dcc, html

from dashboard.loaders import deep_neurons as D
from dashboard.loaders import neuron_stats as S
from dashboard.loaders import unit_ablation as A
from dashboard.loaders.neuron_target import Target, unit_href
from dashboard.read.store import StoreError
from dashboard.views import theme, widgets
from dashboard.views.neurons.ablation_view import ablation_href, unit_drop_figure, unit_drop_sentence
from dashboard.views.neurons.image_view import image_href
from dashboard.views.neurons.neuron_figures import (class_means_figure, emergence_figure, histogram_figure, per_class_figure,
                                            weights_figure)
from dashboard.views.neurons.neuron_images import ink, png_uri, top_mean_uri
from dashboard.views.neurons.unit_report import report_html, summary_sentence

STRIP_PX = 56  # a top or bottom image's side on the page


def image_strip(indices, acts, labels, images, class_name: str, href=None) -> list:
    """Test images with their digit and the unit's activation, in the order given; each a link to
    `href(index)` (its image page) when given."""
    figures = [html.Figure([
        html.Img(src=png_uri(ink(images[i])), alt=f"test image {i}",
                 style={"width": STRIP_PX, "height": STRIP_PX, "imageRendering": "pixelated",
                        "border": "1px solid var(--border)"}),
        html.Figcaption([html.B(str(labels[i])), f" · {acts[i]:.3f}"], className="small"),
    ], className=class_name, title=f"test image #{i}: digit {labels[i]}, activation {acts[i]:.4f}",
        style={"margin": 0, "textAlign": "center"}) for i in indices]
    if href is None:
        return figures
    return [dcc.Link(f, href=href(int(i)), className="unit-image-link", style={"color": "inherit"})
            for f, i in zip(figures, indices)]


def panels(t: Target, unit: int) -> dict:
    """Everything the epoch scrubber updates, for one unit at t.epoch."""
    stats = S.layer_stats(t)
    images, labels = S.test_images()
    a = stats.acts[:, unit]
    href = functools.partial(image_href, t.run_id, epoch=t.epoch)
    dead_note = [html.Span("The unit is dead: all 10,000 images tie, so these are simply the first ones.",
                           className="small muted")] if stats.dead[unit] else []
    return {
        "weights": weights_figure(t, S.weights(t), unit),
        "top_mean": top_mean_uri(stats, unit),
        "top": image_strip(stats.top[unit], a, labels, images, "unit-top-img", href) + dead_note,
        "bottom": image_strip(stats.bottom[unit], a, labels, images, "unit-bottom-img", href),
        "hist": histogram_figure(stats, unit),
        "per_class": per_class_figure(stats, unit, labels),
        "means": class_means_figure(stats, unit),
        "summary": summary_sentence(t, stats, unit, labels),
        "verdict": stats.verdicts[unit],
        "k": stats.top.shape[1],
        **feature_vis(t, unit),
    }


def feature_vis(t: Target, unit: int) -> dict:
    """The input that maximises the unit at t.epoch, as a picture (dark = ink), and what it reaches."""
    try:
        vis = D.feature_vis(t, unit)
    except StoreError as e:  # e.g. a run from the user's own loop: its units are logged, its code is not
        return {"fv": None, "fv_value": f"No feature visualisation: {e}", "fv_starts": []}
    what = "mean pre-activation over its feature map" if t.kind == "conv" else "pre-activation"
    return {"fv": png_uri(ink(vis.image * 255)),
            "fv_value": f"Its {what} on this image: {vis.objective:.2f} (best of the starts).",
            "fv_starts": vis.objectives}


def feature_vis_tiles(t: Target) -> tuple[list[str], str]:
    """Every unit's feature visualisation as a tile (about 0.2 s a unit the first time), and the legend line."""
    uris = [png_uri(ink(D.feature_vis(t, u).image * 255)) for u in range(t.units)]
    return uris, "Each tile: the input that maximises the unit (dark = ink), by activation maximisation with " \
                 "L2, jitter and blur (Olah et al. 2017); open a unit for how it was made."


def emergence_panel(t: Target, unit: int) -> html.Div:
    """When the unit became class-selective, and its SI and verdict at every snapshot epoch."""
    e = D.emergence(t)
    emerged = e.emergence[unit]
    verdicts = [v[unit] for v in e.verdicts]
    line = (f"First class-selective at epoch {emerged} (the first snapshot whose verdict is class-selective)."
            if emerged is not None else "Never class-selective at any snapshot epoch.")
    rows = [html.Tr([html.Td(str(ep)), html.Td(f"{e.si[i, unit]:.2f}"),
                     html.Td(verdicts[i], className=theme.verdict_class(verdicts[i]))])
            for i, ep in enumerate(e.epochs)]
    return html.Div([
        html.P(html.B(line), id="unit-emergence-line"),
        html.Div([
            widgets.graph(emergence_figure(e.epochs, e.si[:, unit], verdicts, emerged), "unit-emergence"),
            html.Div(html.Table([html.Thead(html.Tr([html.Th("epoch"), html.Th("SI"), html.Th("verdict")])),
                                 html.Tbody(rows)], id="unit-emergence-table", className="small"),
                     style={"maxHeight": 280, "overflowY": "auto"}),
        ], className="grid-2"),
    ])


def _compare_side(target: Target, unit: int, who: str):
    stats = S.layer_stats(target)
    if target.first:
        title = f"{who}: unit {unit}, epoch {target.epoch}"
        pic = widgets.graph(weights_figure(target, S.weights(target), unit, title), responsive=False)
    else:
        pic = html.Img(src=top_mean_uri(stats, unit), style={"width": 140, "imageRendering": "pixelated"})
    verdict = stats.verdicts[unit]
    return html.Div([pic, html.Div([
        html.B(f"{who}: "), dcc.Link(f"unit {unit}", href=unit_href(target.run_id, target.layer, unit, target.epoch)),
        " · ", html.Span(verdict, className=theme.verdict_class(verdict)), f" · SI {stats.si[unit]:.2f}"])])


def compare_panel(t: Target, unit: int, other: Target):
    """This unit and its best match in another run (neuron_target.counterpart), side by side, with the
    correlation and both verdicts."""
    m = S.best_match(t, unit, other)
    return html.Div([
        html.P([f"Best match in {m.other.run_name} ({m.other.run_id[:8]}): unit {m.unit}, correlation ",
                html.B(f"r = {m.corr:.2f}", id="unit-compare-corr"),
                f" over the 10,000 test images ({m.method} across the layer's units)."]),
        html.Div([_compare_side(t, unit, "This run"), _compare_side(m.other, m.unit, "Other run")],
                 className="grid-2"),
    ])


def report(t: Target, unit: int) -> str:
    """The unit's one-page HTML report, with its current name and note."""
    images, labels = S.test_images()
    label = S.neuron_labels(t).get(unit, {})
    return report_html(t, unit, S.layer_stats(t), S.weights(t), images, labels, label)


def ablation_panel(t: Target, unit: int) -> list:
    """The accuracy lost on each digit when this unit alone is switched off (set to 0), with one sentence."""
    try:
        a = A.ablation(t)
    except StoreError as e:  # e.g. a run from its own loop: there is no network to rerun
        return [widgets.message(str(e), "info")]
    drop = a.drop[unit]
    return [html.P(html.B(unit_drop_sentence(drop, float(a.overall_drop[unit]))), id="unit-ablation-line"),
            widgets.graph(unit_drop_figure(drop, unit), "unit-ablation-bar"),
            dcc.Link(f"every unit of layer {t.layer} switched off", href=ablation_href(t.run_id, t.layer, t.epoch),
                     className="small")]
