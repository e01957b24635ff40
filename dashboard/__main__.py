"""python -m dashboard [--host 127.0.0.1] [--port 8050] [--debug]"""
import argparse

from dashboard.serving import auth


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dashboard", description="Serve the MNIST Lab dashboard.")
    auth.add_bind_arguments(p)
    p.add_argument("--debug", action="store_true", help="Dash dev tools and hot reload; never on a shared host")
    args = p.parse_args(argv)
    auth.announce_binding(p, args.host)
    from dashboard.app import app
    from training.location import tracking_uri
    print(f"MLflow store: {tracking_uri()}")
    print(f"Dashboard: http://{args.host}:{args.port}/", flush=True)
    app.run(host=args.host, port=args.port, debug=args.debug)


if __name__ == "__main__":
    main()
