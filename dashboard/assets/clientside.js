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
    // The compare page's "copy link": the address as the browser shows it, host included.
    currentUrl: function () {
      return [window.location.href, window.location.href];
    },
  },
});
