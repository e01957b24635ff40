"""Analytics over arrays (health checks, neuron statistics, loss landscape).  Nothing here imports Dash."""
