"""mnistlab: the lab's commands under one name, the console command `pip install` puts on PATH.

    mnistlab grid my_grid.yaml --workers 2     is     python -m training.grid my_grid.yaml --workers 2

Each subcommand runs its module exactly as `python -m` does (runpy), so its options, errors and exit codes
are that module's own.  The module is imported only then: `mnistlab grid` never loads Dash.  This file sits
above both packages because it names commands of both, and training must never import the dashboard.
"""
import runpy
import sys

# name -> (module run as __main__, one line for --help)
COMMANDS = {
    "train": ("training.train", "train one network into the store"),
    "grid": ("training.grid", "train every config of a grid YAML file (or run its search)"),
    "dashboard": ("dashboard", "serve the dashboard (one process; `serve` for several workers)"),
    "serve": ("dashboard.serve", "serve the dashboard under gunicorn with several workers"),
    "backfill": ("training.backfill_summaries", "log layer summaries on runs made before they existed"),
    "migrate": ("training.migrate_store", "copy a store's runs to another tracking URI"),
    "data": ("training.nets.data", "fetch MNIST and verify its sha256s (into ./data, or MNIST_ROOT)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(["usage: mnistlab COMMAND [options]   (mnistlab COMMAND --help for its options)", "",
                      "commands:", *lines, "",
                      "The store is MLFLOW_TRACKING_URI, else ./mlflow_runs; MNIST is in MNIST_ROOT, else ./data."])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mnistlab: unknown command {name!r}; choose one of {', '.join(COMMANDS)} (mnistlab --help)",
              file=sys.stderr)
        return 2
    sys.argv = [f"mnistlab {name}", *rest]
    runpy.run_module(COMMANDS[name][0], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
