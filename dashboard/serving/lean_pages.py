"""Lean pages: what a page's browser runs before its first chart.

Why (benchmarks/page_load.py, headless Chromium): most of the time to a page's first chart went to
loading, parsing and running JavaScript: plotly.js (4.8 MB), which Dash only starts fetching once the
first graph mounts, after its layout round trips, and AG Grid (1.3 MB), which only the runs page uses.

A lean page, every page but FULL_PAGES, loads the cartesian plotly.js bundle (npm's
plotly.js-cartesian-dist-min, the version plotly.py ships: about half the time to run).  It leaves out AG
Grid and Dash's DataTable, which no page uses (Dash loads it on every page all the same), and swaps Dash's
@babel/polyfill (100 KB of core-js a current browser does not need) for the one part Dash's scripts use,
regenerator-runtime (dashboard/vendor/).
A loader in every page's <head> fetches the page's bundle at once and sets `window.Plotly` to a promise
of it, which Dash's graph awaits instead of fetching its own copy.

The cartesian bundle and Dash's large scripts, on every page, start with V8's compile hint
(COMPILE_HINT): Chromium (136+) then compiles all their functions on the thread that streams the script
in, instead of each one on the main thread the first time it is called.  The full plotly.js goes without:
most of its 4.8 MB never runs.

FULL_PAGES draw traces the cartesian bundle lacks: the runs page (parcoords, and the grid), the run page
(the loss landscape's surface) and the layer map (scattergl).  Dash moves between pages without
reloading; moving from a lean page to a full one loads it afresh instead.

`make install` fetches the bundle once (python -m dashboard.serving.lean_pages) and checks its sha256; when it
is missing, or plotly.py ships another plotly.js version, every page is a full page, as Dash serves them.
"""
import functools
import hashlib
import json
import re
import sys
from pathlib import Path

from dashboard.serving import npm_file

PACKAGE = "plotly.js-cartesian-dist-min"
VERSION = "4.1.1"
SHA256 = "79542150855a52c567260e3137095dbe2b744e6d702a5cabe67da246942fba7a"  # package/plotly-cartesian.min.js
ROUTE = f"/_mnistlab/plotly-cartesian-{VERSION}.min.js"  # the version in the name: cached for good
# The trace types the cartesian bundle registers (its README); tests/test_lean_pages.py checks every
# figure the dashboard builds against this list and FULL_PAGES.
CARTESIAN_TRACES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour",
                              "image", "pie", "scatter", "scatterternary", "violin"})
# Paths (regular expressions, JavaScript and Python alike) of the pages that need the full bundle.
FULL_PAGES = (r"^/$", r"^/runs/[^/]+/?$", r"^/runs/[^/]+/neurons/map/?$")
# Pages whose first screen has no chart: their plotly.js runs only once their first chart mounts.  The runs
# page (its table first, its figures after the table's first rows): the full bundle took 0.5 s of the
# main thread there before the table's first rows (a CPU profile of benchmarks/runs_page_load.py's load).
LAZY_PAGES = (r"^/$",)
# Component libraries whose scripts lean pages leave out (their names in Dash's script URLs).
LEFT_OUT = ("dash_ag_grid", "dash/dash_table")
RUNTIME = Path(__file__).parents[1] / "vendor" / "regenerator-runtime" / "runtime.js"
RUNTIME_ROUTE = "/_mnistlab/regenerator-runtime-0.13.11.js"
# The compare page of 9 runs (benchmarks/page_load.py's), traced: main-thread compile 0.9 s -> 0.2 s.
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"
# Dash's scripts that every page runs as it loads, large enough for Chromium to stream (small ones it
# compiles on the main thread, where compiling every function would cost more than it saves).  Not their
# source maps: a comment would break the JSON.
HINTED_SCRIPTS = re.compile(r"/_dash-component-suites/dash/(deps/react-dom@|dash-renderer/build/dash_renderer\."
                            r"|dcc/dash_core_components[.-]|html/dash_html_components\.|deps/polyfill@)[^/]*\.js$")

LOADER = """<script>
(function () {
  var cfg = window.mnistlabPlotly = %(config)s;
  function matches(path, patterns) {
    path = path.slice(cfg.prefix.length - 1) || "/";
    return patterns.some(function (re) { return new RegExp(re).test(path); });
  }
  function needsFull(path) { return !cfg.cartesian || matches(path, cfg.fullPages); }
  // Fetched at once, but run only once Dash has sent its first callback request (the page's own layout):
  // plotly.js then holds the main thread while the server works, not before the request goes out.
  var asked = new Promise(function (resolve) {
    var fetch = window.fetch;
    window.fetch = function (input) {
      var url = typeof input === "string" ? input : (input && input.url) || "";
      if (url.indexOf("_dash-update-component") >= 0) setTimeout(resolve, 0);
      return fetch.apply(this, arguments);
    };
    window.addEventListener("load", function () { setTimeout(resolve, 2000); });  // a page with no callback
  });
  function preload(src) {
    var hint = document.createElement("link");
    hint.rel = "preload"; hint.as = "script"; hint.href = src;
    document.head.appendChild(hint);
  }
  function load(src, fallback) {
    return new Promise(function (resolve, reject) {
      asked.then(function () {
        var s = document.createElement("script");
        s.src = src;
        s.onload = function () { resolve(window.Plotly); };
        s.onerror = function () { fallback ? load(fallback).then(resolve, reject) : reject(new Error(src)); };
        document.head.appendChild(s);
      });
    });
  }
  // Dash's graph, slider and dropdown code comes in chunks fetched only as the first of each renders.
  cfg.chunks.forEach(preload);
  cfg.loaded = needsFull(location.pathname) ? "full" : "cartesian";
  // Dash's graph awaits window.Plotly when it is a promise; the bundle replaces it with itself as it runs.
  // On a LAZY_PAGES page it is a promise-like that starts running the bundle only when first awaited, by
  // the first graph to mount: nothing on that page's first screen needs it.
  var src = cfg.loaded === "full" ? cfg.full : cfg.cartesian;
  preload(src);
  function start() { return cfg.loaded === "full" ? load(cfg.full) : load(cfg.cartesian, cfg.full); }
  var started = null;
  window.Plotly = !matches(location.pathname, cfg.lazyPages) ? start() : {
    then: function (ok, fail) { started = started || start(); return started.then(ok, fail); }
  };
  function reloadFor(path) { return cfg.loaded === "cartesian" && needsFull(path); }
  var push = history.pushState;
  history.pushState = function (state, title, url) {
    var target = new URL(url == null ? location.href : url, location.href);
    if (reloadFor(target.pathname)) { location.assign(target.href); return; }
    return push.apply(this, arguments);
  };
  window.addEventListener("popstate", function () { if (reloadFor(location.pathname)) location.reload(); }, true);
})();
</script>"""


def bundle_path() -> Path:
    """Where `make install` puts the bundle: inside the virtual environment, which it belongs with."""
    return Path(sys.prefix) / "share" / "mnistlab" / f"plotly-cartesian-{VERSION}.min.js"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def cartesian_available() -> bool:
    """The bundle is installed, intact, and the same plotly.js version as plotly.py's full bundle."""
    from plotly.offline import get_plotlyjs_version
    path = bundle_path()
    return path.is_file() and get_plotlyjs_version() == VERSION and _sha256(path) == SHA256


def loader(prefix: str) -> str:
    """The <head> script for an app served under `prefix` (Dash's requests_pathname_prefix)."""
    config = {"prefix": prefix, "fullPages": list(FULL_PAGES), "lazyPages": list(LAZY_PAGES),
              "cartesian": prefix + ROUTE.lstrip("/") if cartesian_available() else None,
              "full": prefix + "_dash-component-suites/plotly/package_data/plotly.min.js",
              "chunks": [f"{prefix}_dash-component-suites/dash/dcc/async-{c}.js" for c in ("graph", "slider", "dropdown")]}
    return LOADER % {"config": json.dumps(config)}


def is_lean(path: str) -> bool:
    """Whether the page at this path (the app's prefix taken off) loads the lean scripts."""
    return cartesian_available() and not any(re.match(p, path) for p in FULL_PAGES)


def lean_scripts(scripts: str, prefix: str) -> str:
    """Dash's page scripts, those of the LEFT_OUT libraries taken out and regenerator-runtime for the polyfill."""
    names = "|".join(map(re.escape, LEFT_OUT))
    scripts = re.sub(rf'<script src="[^"]*/(?:{names})/[^"]*"></script>\s*', "", scripts)
    return re.sub(r'<script src="[^"]*/deps/polyfill@[^"]*"></script>',
                  f'<script src="{prefix}{RUNTIME_ROUTE.lstrip("/")}"></script>', scripts)


@functools.cache
def _hinted_bundle() -> bytes:
    return COMPILE_HINT + bundle_path().read_bytes()


def install(app) -> None:
    """Serve the bundle and the runtime, put the loader first in every page's <head>, give lean pages their
    scripts and hint Dash's large ones."""
    import flask

    prefix = app.config.requests_pathname_prefix
    interpolate = app.interpolate_index

    def lean_index(**parts):
        path = "/" + flask.request.path[len(prefix):] if flask.request.path.startswith(prefix) else flask.request.path
        if is_lean(path):
            parts["scripts"] = lean_scripts(parts["scripts"], prefix)
        return interpolate(**parts)

    app.interpolate_index = lean_index

    @app.server.after_request
    def _hint(response):
        if (response.status_code == 200 and HINTED_SCRIPTS.search(flask.request.path)
                and not response.direct_passthrough and "Content-Encoding" not in response.headers):
            response.set_data(COMPILE_HINT + response.get_data())
        return response

    @app.server.route(RUNTIME_ROUTE)
    def _regenerator_runtime():
        return flask.send_file(RUNTIME, mimetype="text/javascript", max_age=365 * 24 * 3600)

    @app.server.route(ROUTE)
    def _cartesian_bundle():
        if not cartesian_available():
            flask.abort(404)
        return flask.Response(_hinted_bundle(), mimetype="text/javascript",
                              headers={"Cache-Control": f"public, max-age={365 * 24 * 3600}"})

    app.index_string = app.index_string.replace("<head>", "<head>\n" + loader(prefix), 1)


def fetch() -> str:
    """Fetch the bundle from npm into bundle_path(), checked by sha256.  Returns what happened, in one line."""
    path = bundle_path()
    if path.is_file() and _sha256(path) == SHA256:
        return f"plotly.js cartesian bundle {VERSION}: already installed"
    failed = npm_file.fetch(PACKAGE, VERSION, "plotly-cartesian.min.js", SHA256, path)
    if failed:
        return f"plotly.js cartesian bundle: {failed}; pages will load plotly.js's full bundle"
    return f"plotly.js cartesian bundle {VERSION}: installed in {path.parent}"


if __name__ == "__main__":
    print(fetch())
