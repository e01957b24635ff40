"""Values to plot, not to crash on: NaN and ±inf become gaps, and a note says how many there were.

Plotly.js draws None as a gap in a line.  A NaN or an infinity in a trace that goes to the browser as
a numpy array (binary) ends up in an SVG path as 'NaN' coordinates instead, which the browser reports
as console errors and draws as nothing.  So every builder that plots logged values passes them
through `gaps`, and the page shows `note(...)` under the figure.
"""
import numpy as np


def bad_mask(values, log_scale: bool = False) -> np.ndarray:
    """True where a value cannot be drawn: NaN, ±inf, or (on a log axis) not above 0."""
    v = np.asarray(values, dtype=np.float64)
    return ~np.isfinite(v) | (v <= 0) if log_scale else ~np.isfinite(v)


def gaps(values, log_scale: bool = False) -> list:
    """The values as a list of floats, with None where bad_mask is True."""
    v = np.asarray(values, dtype=np.float64)
    bad = bad_mask(v, log_scale)
    return [None if b else float(x) for x, b in zip(v.ravel(), bad.ravel())]


def count(values, log_scale: bool = False) -> int:
    return int(bad_mask(values, log_scale).sum())


def note(counts: dict[str, int], log_scale: bool = False) -> str:
    """One line for the values left out of a figure, by series ('' when none were)."""
    counts = {k: n for k, n in counts.items() if n}
    if not counts:
        return ""
    total = sum(counts.values())
    what = "not finite (NaN or ±inf) or not above 0 on this log scale" if log_scale else "not finite (NaN or ±inf)"
    by = "; ".join(f"{k}: {n:,}" for k, n in counts.items())
    return f"{total:,} logged value{'s' if total != 1 else ''} {'are' if total != 1 else 'is'} {what}, " \
           f"drawn as gaps ({by})."


def histories_note(histories: dict, log_scale: bool = False) -> str:
    """`note` for {name: DataFrame with a value column}."""
    return note({name: count(df["value"], log_scale) for name, df in histories.items()}, log_scale)
