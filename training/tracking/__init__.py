"""Tracking: one MLflow run per model through MLflow's public API, written off the training thread, ended in one place."""
