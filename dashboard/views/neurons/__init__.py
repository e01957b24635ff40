"""Neuron views: unit figures, image tiles, layer maps, the unit report, image and similarity pages."""
