"""Data and models: MNIST (sha256-verified), the stacked networks, what layers a config has, and a snapshot's activations."""
