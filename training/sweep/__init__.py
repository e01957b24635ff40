"""Grids: the YAML file, the parent run, the runners (serial, processes, Ray) and the summary table."""
