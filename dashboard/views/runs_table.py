"""The runs table's rows: one view's frame (runs_view.frame_of) sorted, children kept under their grid
parents, and sliced into the blocks AG Grid's infinite row model asks for.

The server sorts, so a view of 100,000 runs never goes to the browser whole: `page_rows` answers one block
from the view's frame once it has been read, and `first_rows` answers from one MLflow search page before
that (dashboard.read.run_index).  Pure functions of frames, apart from `first_rows`.
"""
import math

import numpy as np
import pandas as pd

from dashboard.read import store
from dashboard.views import runs_view as V
from training import contract as C

# Table fields that are not frame columns of the same name (summary fields: runs_view.summary_field).
SORT_COLUMNS = {C.BEST_TEST_ACC: "row_best"}
# What MLflow's search can order by, for the first rows before the view is read (others: newest first).
MLFLOW_ORDER = {"name": "attributes.run_name", "status": "attributes.status", "start_time": "attributes.start_time",
                "final_test_acc": f"metrics.`{C.TEST_ACC}`", C.BEST_TEST_ACC: f"metrics.`{C.BEST_TEST_ACC}`"}
DEFAULT_SORT = [{"colId": "start_time", "sort": "desc"}]


def family(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns for the grid's grouping: `_parent` (the grid parent, when it is in the view), a parent's
    `n_children`, and `row_best`: a run's best test accuracy, a parent's the best of its children."""
    out = frame.copy()
    if out.empty:
        return out
    ids = set(out["run_id"])
    parents = out["parent_run_id"] if "parent_run_id" in out else pd.Series(None, index=out.index)
    out["_parent"] = parents.where(parents.isin(ids), None)
    kids = out[out["_parent"].notna()]
    out["n_children"] = out["run_id"].map(kids.groupby("_parent").size()).fillna(0).astype(int)
    best = pd.to_numeric(out[C.BEST_TEST_ACC], errors="coerce") if C.BEST_TEST_ACC in out else pd.Series(np.nan, index=out.index)
    kids_best = best[out["_parent"].notna()].groupby(out.loc[out["_parent"].notna(), "_parent"]).max()
    from_kids = out["run_id"].map(kids_best)
    is_parent = out["is_grid_parent"].fillna(False).astype(bool) if "is_grid_parent" in out else False
    out["row_best"] = best.where(~(is_parent & from_kids.notna()), np.fmax(best.fillna(0.0), from_kids))
    return out


def order(frame: pd.DataFrame, sort_model: list[dict] | None) -> pd.DataFrame:
    """The frame in the grid's sort order (newest first by default), NaN last, then each grid child moved
    directly under its parent, keeping the sorted order within each level."""
    if frame.empty:
        return frame
    by, ascending = [], []
    for s in (sort_model or DEFAULT_SORT):
        col = _column(s.get("colId"), frame)
        if col is not None:
            by.append(col)
            ascending.append(s.get("sort") != "desc")
    if by:
        keys = frame[by].apply(_sortable).reset_index(drop=True)
        frame = frame.iloc[keys.sort_values(by, ascending=ascending, na_position="last", kind="stable").index]
    n = len(frame)
    pos = pd.Series(np.arange(n), index=frame["run_id"].to_numpy())
    parent = frame["_parent"] if "_parent" in frame else pd.Series(None, index=frame.index)
    has = parent.notna().to_numpy()
    group = np.where(has, pos.reindex(parent.fillna("").to_numpy()).to_numpy(dtype=float, na_value=-1), np.arange(n))
    sub = np.where(has, np.arange(n), -1)
    return frame.iloc[np.lexsort((sub, group))]


def _column(col_id, frame: pd.DataFrame) -> str | None:
    if not isinstance(col_id, str):
        return None
    for name in (SORT_COLUMNS.get(col_id), col_id, f"params.{col_id}", "metrics." + col_id.replace("__", ".")):
        if name in frame.columns:
            return name
    return None


def _sortable(values: pd.Series) -> pd.Series:
    """Numbers as numbers (lr 0.3 < 1.0 < 3.0, not as text) when every value is one; text otherwise."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values
    nums = pd.to_numeric(values, errors="coerce")
    return nums if nums.notna().sum() == values.notna().sum() else values.astype("string").str.lower()


def page_rows(frame: pd.DataFrame, sort_model, start: int, end: int, now: pd.Timestamp | None = None) -> list[dict]:
    """Rows start..end of the view (its frame through `family`) in the grid's sort order."""
    return rows(order(frame, sort_model).iloc[max(start, 0):max(end, 0)], now)


def table_rows(frame: pd.DataFrame, now: pd.Timestamp | None = None) -> list[dict]:
    """Every row of a frame, each child directly after its grid parent, in the frame's own order."""
    return rows(_grouped(family(frame)), now)


def _grouped(fam: pd.DataFrame) -> pd.DataFrame:
    """A frame through `family` in its own order, children moved under their parents."""
    if fam.empty:
        return fam
    return order(fam.assign(_position=np.arange(len(fam))), [{"colId": "_position", "sort": "asc"}])


def first_rows(experiment_id: str, filter_string: str, sort_model, end: int) -> tuple[list[dict], bool]:
    """Rows 0..end from one MLflow search page, ordered there when MLflow can order by the sorted column:
    the table's first screen while the view is still being read.  Returns (rows, whether that is all)."""
    order_by = [f"{MLFLOW_ORDER[s['colId']]} {'DESC' if s.get('sort') == 'desc' else 'ASC'}"
                for s in (sort_model or DEFAULT_SORT) if s.get("colId") in MLFLOW_ORDER]
    page = store.search_page([experiment_id], filter_string, end, order_by=order_by or None)
    frame = family(V.frame_of(list(page)))
    return rows(_grouped(frame)), not page.token


def rows(frame: pd.DataFrame, now: pd.Timestamp | None = None) -> list[dict]:
    """Grid rows of a frame that went through `family`.  A running run's duration counts up to `now`."""
    if frame.empty:
        return []
    now = now if now is not None else pd.Timestamp.now("UTC").tz_localize(None)
    out, summaries = [], V.summary_columns(frame)
    for r in frame.to_dict("records"):
        duration = r.get("duration_s")
        if (duration is None or _nan(duration)) and r["status"] == C.STATUS_RUNNING and not pd.isna(r["start_time"]):
            duration = (now - r["start_time"]).total_seconds()
        is_parent = r.get("is_grid_parent") is True
        name, parent = r.get("name"), r.get("_parent")  # NaN where a column was missing from one page's frame
        row = {"run_id": r["run_id"], "name": name if isinstance(name, str) and name else r["run_id"][:8],
               "status": r["status"], "parent": parent if isinstance(parent, str) else None, "is_parent": is_parent,
               # A search's parent opens its review (pages/search.py); every other run, its run page.
               "href": f"/search/{r['run_id']}" if r.get("is_search_parent") is True else f"/runs/{r['run_id']}",
               "search_state": search_state(r.get("search_state"), r.get("search_pruned_at")),
               "final_test_acc": _num(r.get("final_test_acc")), C.BEST_TEST_ACC: _num(r.get("row_best")),
               C.BEST_EPOCH: _num(r.get(C.BEST_EPOCH)),
               "duration_s": None if duration is None or _nan(duration) else float(duration),
               "start_time": None if pd.isna(r["start_time"]) else r["start_time"].strftime("%Y-%m-%d %H:%M:%S")}
        if r.get("n_children"):
            row["n_children"] = int(r["n_children"])
        params = {p: v for p in (*V.KEY_PARAMS, C.PARAM_ARCH, C.PARAM_ARCH_LABEL)
                  if (v := r.get(f"params.{p}")) is not None and not _nan(v)}
        row.update({p: params.get(p) for p in V.KEY_PARAMS})
        row[C.PARAM_ARCH_LABEL] = store.arch_label(params)
        row.update({V.summary_field(c): _num(r.get(c)) for c in summaries})
        out.append(row)
    return out


def search_state(state, pruned_at) -> str | None:
    """A search trial's state as the table shows it ("pruned at 3"); None for any other run.  Tags are
    untrusted text: a state outside the contract's is shown as nothing rather than as whatever it says."""
    if state not in C.SEARCH_STATES:
        return None
    if state == C.SEARCH_PRUNED and isinstance(pruned_at, str) and pruned_at.isascii() and pruned_at.isdigit():
        return f"{state} at {int(pruned_at)}"
    return state


def _num(v):
    return None if v is None or _nan(v) or not math.isfinite(float(v)) else float(v)


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)
