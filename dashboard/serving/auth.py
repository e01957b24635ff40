"""Optional HTTP basic auth for a dashboard shared beyond this machine.

Set DASHBOARD_USER and DASHBOARD_PASSWORD and every route (pages, assets, Dash callbacks) asks for them;
set neither and the dashboard is open, as it should be on localhost.  Basic auth sends the password in
clear text on every request: put TLS (a reverse proxy) in front when the network is not trusted.
"""
import hmac
import ipaddress
import os
import sys

from flask import Response, request

ENV_USER, ENV_PASSWORD = "DASHBOARD_USER", "DASHBOARD_PASSWORD"
REALM = "MNIST Lab"


class AuthConfigError(Exception):
    """Only one of the two variables is set."""


def credentials() -> tuple[str, str] | None:
    """(user, password) from the environment, None when auth is off."""
    user, password = os.environ.get(ENV_USER, ""), os.environ.get(ENV_PASSWORD, "")
    if bool(user) != bool(password):
        missing = ENV_PASSWORD if user else ENV_USER
        raise AuthConfigError(f"{missing} is not set: set both {ENV_USER} and {ENV_PASSWORD} to require a login, "
                              f"or neither for an open dashboard")
    return (user, password) if user else None


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode(), expected.encode())


def protect(server) -> None:
    """Require the login on every request of this Flask server, if credentials are configured."""
    creds = credentials()
    if creds is None:
        return

    @server.before_request
    def _require_login():
        given = request.authorization
        ok = given is not None and given.type == "basic"
        # Both compared in constant time, and both always compared, so timing says nothing about which was wrong.
        user_ok = _same(given.username if ok else None, creds[0])
        password_ok = _same(given.password if ok else None, creds[1])
        if not (ok and user_ok and password_ok):
            return Response("Login required.\n", 401, {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
        return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it can be reached from elsewhere


def bind_notice(host: str) -> tuple[str, bool] | None:
    """What to print before serving on host: (line, is_warning), or None on loopback without auth."""
    creds = credentials()
    if creds is not None:
        return f"auth: on (HTTP basic, user '{creds[0]}' from {ENV_USER}/{ENV_PASSWORD})", False
    if not is_loopback(host):
        return (f"warning: binding to {host} exposes the dashboard to the network without a login; "
                f"set {ENV_USER} and {ENV_PASSWORD} to require one"), True
    return None


def add_bind_arguments(parser) -> None:
    """--host and --port, shared by `python -m dashboard` and `python -m dashboard.serve`."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=8050)


def announce_binding(parser, host: str) -> None:
    """Print whether a login guards the bind address (a warning when the network sees it without one)."""
    try:
        notice = bind_notice(host)
    except AuthConfigError as e:
        parser.error(str(e))
    if notice:
        print(notice[0], file=sys.stderr if notice[1] else sys.stdout, flush=True)
