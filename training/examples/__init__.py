"""Plain PyTorch training scripts, each logged to MLflow with about ten lines of training.own_loop."""
