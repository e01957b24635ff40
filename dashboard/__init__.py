"""The Dash app that reads the MLflow store: runs, comparisons, run diagnostics and neurons."""
