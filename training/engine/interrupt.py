"""Ctrl-C and SIGTERM as a request to stop at the next safe point.

A signal handler that raises wherever it lands can fire inside a cleanup or an
MLflow write and be swallowed or leave a half-written record.  Instead the
first signal sets a flag that the engine checks between steps (`check`), so
runs end KILLED from a known place.  A second signal raises at once.
"""
import signal

_requested = False


def _handler(signum, frame):
    global _requested
    if _requested:
        raise KeyboardInterrupt
    _requested = True


def install() -> None:
    global _requested
    _requested = False
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def requested() -> bool:
    return _requested


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested."""
    if _requested:
        raise KeyboardInterrupt
