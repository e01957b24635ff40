"""Serve the dashboard under gunicorn with several workers: python -m dashboard.serve [--workers 4]"""
import argparse
import os
import sys

LOCAL = ("127.0.0.1", "localhost", "::1")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dashboard.serve", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.host not in LOCAL:
        print(f"warning: binding to {args.host} exposes the dashboard to the network without a login",
              file=sys.stderr)
    print(f"Dashboard: http://{args.host}:{args.port}/ (gunicorn, {args.workers} workers)", flush=True)
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    os.execv(gunicorn, [gunicorn, "--bind", f"{args.host}:{args.port}", "--workers", str(args.workers),
                        "--timeout", "120", "dashboard.app:server"])


if __name__ == "__main__":
    main()
