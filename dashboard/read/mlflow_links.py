"""Links to the same runs in MLflow's own UI, opened in its model-training view.

The UI's address is MLFLOW_UI_URL (e.g. http://127.0.0.1:5000, what `mlflow ui` prints).  When it
is unset and the store is a tracking server, the server is the UI: `mlflow server` serves it too.
Otherwise there is no UI to link to, and every builder returns None.

MLflow 3's UI routes after a '#', and picks its view from the `workflowType` query parameter of that
route, falling back to the last view the browser used (GenAI on a first visit).  Every link sets it
to `machine_learning`, the view with metrics charts, params and the logged model.
"""
import json
import os
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from training.location import is_server, tracking_uri

ENV_UI_URL = "MLFLOW_UI_URL"
MODEL_TRAINING = {"workflowType": "machine_learning"}


def ui_base() -> str | None:
    """The UI's base URL without a trailing slash, or None.  Only http(s) URLs count; credentials are dropped."""
    given = os.environ.get(ENV_UI_URL, "").strip()
    url = given or (tracking_uri() if is_server(tracking_uri()) else "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _route(path: str, query: dict | None = None, base: str | None = None) -> str | None:
    base = base or ui_base()
    if base is None:
        return None
    return f"{base}/#{path}?{urlencode({**(query or {}), **MODEL_TRAINING}, safe=',')}"


def experiment_url(experiment_id: str, base: str | None = None) -> str | None:
    return _route(f"/experiments/{quote(str(experiment_id), safe='')}", base=base)


def run_url(experiment_id: str, run_id: str, base: str | None = None) -> str | None:
    return _route(f"/experiments/{quote(str(experiment_id), safe='')}/runs/{quote(str(run_id), safe='')}",
                  base=base)


def compare_url(runs, base: str | None = None) -> str | None:
    """MLflow's compare page for these runs (MLflow Run objects); None for no runs or no UI."""
    if not runs:
        return None
    run_ids = [r.info.run_id for r in runs]
    experiment_ids = sorted({r.info.experiment_id for r in runs})
    return _route("/compare-runs", {"runs": json.dumps(run_ids), "experiments": json.dumps(experiment_ids)},
                  base=base)
