"""python -m dashboard [--host 127.0.0.1] [--port 8050] [--debug]"""
import argparse
import sys


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dashboard", description="Serve the MNIST Lab dashboard.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--debug", action="store_true", help="Dash dev tools and hot reload; never on a shared host")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host} exposes the dashboard to the network without a login", file=sys.stderr)
    from dashboard.app import app
    from training.tracking import tracking_uri
    print(f"MLflow store: {tracking_uri()}")
    print(f"Dashboard: http://{args.host}:{args.port}/", flush=True)
    app.run(host=args.host, port=args.port, debug=args.debug)


if __name__ == "__main__":
    main()
