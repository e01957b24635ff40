"""Serve the dashboard under gunicorn with several workers: python -m dashboard.serve [--workers 4]"""
import argparse
import os
import socket
import sys

from dashboard.serving import auth


def gunicorn_argv(host: str, port: int, workers: int, log_level: str = "info") -> list[str]:
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    # Workers are separate processes: what one reads from the store the others find in dashboard.read.cache.
    # --preload imports the app (torch, plotly, MLflow) once and forks the workers from it: they start in
    # a moment and share that memory.  No control socket: its one default path per user would clash
    # between two dashboards on one machine.
    # No request-line limit: a compare of 300 runs (compare_view.MAX_RUNS) is a 10 kB URL, past gunicorn's
    # 4 kB default and its 8 kB most; a reload or a shared link of it would get a bare 400.
    return [gunicorn, "--bind", f"{host}:{port}", "--workers", str(workers), "--timeout", "120", "--preload",
            "--no-control-socket", "--limit-request-line", "0", "--log-level", log_level, "dashboard.app:server"]


def port_in_use(host: str, port: int) -> bool:
    """True when host:port cannot be bound (gunicorn would retry it for seconds, then fail in five lines)."""
    try:
        socket.create_server((host, port)).close()  # SO_REUSEADDR, as gunicorn binds
    except OSError:
        return True
    return False


def add_arguments(p: argparse.ArgumentParser) -> None:
    auth.add_bind_arguments(p)
    p.add_argument("--workers", type=int, default=4)


def prepare(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the arguments and the port, print the login notice and the cache folder; exits 2 on a user error."""
    if args.workers < 1:
        p.error("--workers must be at least 1")
    auth.announce_binding(p, args.host)
    if port_in_use(args.host, args.port):
        print(f"error: {args.host}:{args.port} is already in use (another dashboard?); pick another port, "
              f"e.g. --port {args.port + 1} (make: PORT={args.port + 1})", file=sys.stderr)
        sys.exit(2)
    from dashboard.read import cache
    print(f"Shared cache: {cache.root()} (one folder per MLflow store)")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the server log readable


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dashboard.serve", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    prepare(p, args)
    print(f"Dashboard: http://{args.host}:{args.port}/ (gunicorn, {args.workers} workers)", flush=True)
    argv = gunicorn_argv(args.host, args.port, args.workers)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
