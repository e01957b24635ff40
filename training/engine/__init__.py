"""The engine: a cohort of K configs trained as one stacked computation, its steps (the C kernel or PyTorch), evaluation and Ctrl-C."""
