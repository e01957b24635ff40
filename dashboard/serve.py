"""Serve the dashboard under gunicorn with several workers: python -m dashboard.serve [--workers 4]"""
import argparse
import os
import sys

from dashboard import auth


def gunicorn_argv(host: str, port: int, workers: int) -> list[str]:
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    # Workers are separate processes: what one reads from the store the others find in dashboard.cache.
    # --preload imports the app (torch, plotly, MLflow) once and forks the workers from it: they start in
    # a moment and share that memory.  No control socket: its one default path per user would clash
    # between two dashboards on one machine.
    return [gunicorn, "--bind", f"{host}:{port}", "--workers", str(workers), "--timeout", "120", "--preload",
            "--no-control-socket", "dashboard.app:server"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dashboard.serve", description=__doc__.splitlines()[0])
    auth.add_bind_arguments(p)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    auth.announce_binding(p, args.host)
    from dashboard import cache
    print(f"Shared cache: {cache.root()} (one folder per MLflow store)")
    print(f"Dashboard: http://{args.host}:{args.port}/ (gunicorn, {args.workers} workers)", flush=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the server log readable
    argv = gunicorn_argv(args.host, args.port, args.workers)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
