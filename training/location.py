"""Where the MLflow store is: the tracking URI rules and a SQLite store's artifact root.

Torch-free on purpose: the trainer and the dashboard both import it, and the
dashboard must start without loading torch.
"""
import os
from pathlib import Path

# The folder holding the packages: a clone, or site-packages once installed.
REPO_ROOT = Path(__file__).resolve().parents[1]
# SQLite's busy timeout: several trainers and the dashboard share the default store.
SQLITE_TIMEOUT_S = 60


def default_store(cwd: Path | None = None) -> Path:
    """The clone's mlflow_runs/ when working inside the clone (as `make run` always has); anywhere else, as for
    an installed package, ./mlflow_runs in the current folder: a project's own store, as MLflow's ./mlruns is."""
    cwd = (cwd or Path.cwd()).resolve()
    if (REPO_ROOT / "pyproject.toml").is_file() and cwd.is_relative_to(REPO_ROOT):
        return REPO_ROOT / "mlflow_runs"
    return cwd / "mlflow_runs"


# Fixed at import, so that every part of one process writes and reads the same store.
DEFAULT_STORE = default_store()


def default_tracking_uri() -> str:
    return f"sqlite:///{DEFAULT_STORE / 'mlflow.db'}?timeout={SQLITE_TIMEOUT_S}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set; otherwise the embedded store in DEFAULT_STORE (mlflow_runs/)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def uses_default_store() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def sqlite_artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts live beside the database (MLflow would use ./mlruns in the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server decides its own artifact root
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return (db.resolve().parent / "artifacts").as_uri()
