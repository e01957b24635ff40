"""Where the MLflow store is: the tracking URI rules and a SQLite store's artifact root.

Torch-free on purpose: the trainer and the dashboard both import it, and the
dashboard must start without loading torch.
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = REPO_ROOT / "mlflow_runs"
# SQLite's busy timeout: several trainers and the dashboard share the default store.
SQLITE_TIMEOUT_S = 60


def default_tracking_uri() -> str:
    return f"sqlite:///{DEFAULT_STORE / 'mlflow.db'}?timeout={SQLITE_TIMEOUT_S}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set; otherwise the embedded store in mlflow_runs/."""
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
