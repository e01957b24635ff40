"""Loaders: a page's inputs turned into plain data read through the store, for pure builders to draw."""
