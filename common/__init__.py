"""Torch-free code both packages need: unit verdicts and statistics, MNIST's IDX files and the test set."""
