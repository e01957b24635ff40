// Functions the runs table names in its options ({"function": "..."}); dash-ag-grid looks them up here.
var dagfuncs = (window.dashAgGridFunctions = window.dashAgGridFunctions || {});

dagfuncs.formatDuration = function (seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
};

dagfuncs.formatPercent = function (value) {
  return value === null || value === undefined || isNaN(value) ? "" : (100 * value).toFixed(2) + " %";
};

dagfuncs.runName = function (data) {
  if (!data) return "";
  if (data.is_parent) return data.name + (data.n_children ? "  (" + data.n_children + " runs)" : "");
  return data.name;
};

// The run name as a link to its detail page.  A plain click navigates inside the app the way dcc.Link does
// (no reload); middle-click and "open in new tab" still get a real href.
var dagcomponentfuncs = (window.dashAgGridComponentFunctions = window.dashAgGridComponentFunctions || {});
dagcomponentfuncs.RunLink = function (props) {
  const d = props.data || {};
  const href = d.href || "/runs/" + d.run_id;  // a search's parent: its review, /search/<id>
  const onClick = function (e) {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    window.history.pushState({}, "", href);
    window.dispatchEvent(new CustomEvent("_dashprivate_pushstate"));
    window.scrollTo(0, 0);
  };
  const cls = "run-link" + (d.is_parent ? " run-link-parent" : "") + (d.parent ? " run-link-child" : "");
  return React.createElement("a", { href: href, onClick: onClick, className: cls, title: d.run_id }, dagfuncs.runName(d));
};
