// Clientside callbacks: the light/dark theme (one attribute on <html> drives our CSS and AG Grid) and the copy link.
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  mnistlab: {
    toggleTheme: function (n, current) {
      return current === "dark" ? "light" : "dark";
    },
    applyTheme: function (theme) {
      const mode = theme === "dark" ? "dark" : "light";
      document.documentElement.setAttribute("data-theme", mode);
      document.documentElement.setAttribute("data-ag-theme-mode", mode);
      return mode === "dark" ? "Light" : "Dark";
    },
    // The colour-blind palette: a cookie the server reads as it draws each figure (views/theme.py), so a click
    // flips it and reloads the page; on load (no click yet) it only says whether the button is pressed.
    palette: function (n) {
      const safe = document.cookie.split("; ").includes("mnistlab-palette=safe");
      if (!n) return safe ? "true" : "false";
      document.cookie = "mnistlab-palette=" + (safe ? "; max-age=0" : "safe; max-age=31536000") + "; path=/; SameSite=Lax";
      window.location.reload();
      return safe ? "false" : "true";
    },
    // The compare page's "copy link": the address as the browser shows it, host included.
    currentUrl: function () {
      return [window.location.href, window.location.href];
    },
    // Keep the neuron pages' epoch and choices in the address, so a copied link opens what is shown.
    // history.replaceState is invisible to Dash's page router: no re-render, so a name being typed
    // survives, and scrubbing or playing leaves no trail of history entries.
    unitQuery: function (epoch, compare) {
      replaceQuery({ epoch: epoch, compare: compare });
    },
    layerQuery: function (epoch, sort) {
      replaceQuery({ epoch: epoch, sort: sort === "index" ? null : sort });
    },
  },
});

function replaceQuery(updates) {
  const url = new URL(window.location.href);
  for (const [key, value] of Object.entries(updates)) {
    if (value === null || value === undefined || value === "") url.searchParams.delete(key);
    else url.searchParams.set(key, String(value));
  }
  if (url.href !== window.location.href) window.history.replaceState(window.history.state, "", url.href);
}
