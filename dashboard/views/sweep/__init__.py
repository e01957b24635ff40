"""The compare page's sweep review: groups, importance, neurons across runs, selection."""
