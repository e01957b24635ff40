"""Training side: MNIST data, models, the training engine and the MLflow logging contract."""
