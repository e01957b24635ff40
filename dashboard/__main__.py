"""python -m dashboard [--host 127.0.0.1] [--port 8050] [--debug]"""
import argparse
import sys

from dashboard import auth


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dashboard", description="Serve the MNIST Lab dashboard.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--debug", action="store_true", help="Dash dev tools and hot reload; never on a shared host")
    args = p.parse_args(argv)
    try:
        notice = auth.bind_notice(args.host)
    except auth.AuthConfigError as e:
        p.error(str(e))
    if notice:
        print(notice[0], file=sys.stderr if notice[1] else sys.stdout, flush=True)
    from dashboard.app import app
    from training.tracking import tracking_uri
    print(f"MLflow store: {tracking_uri()}")
    print(f"Dashboard: http://{args.host}:{args.port}/", flush=True)
    app.run(host=args.host, port=args.port, debug=args.debug)


if __name__ == "__main__":
    main()
