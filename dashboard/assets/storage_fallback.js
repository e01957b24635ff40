// A dashboard page framed by another site (a notebook's inline view, training/own_loop/notebook.py) may find
// window.localStorage and sessionStorage denied: a browser blocking third-party storage (Chrome in incognito,
// or with third-party cookies blocked) throws on any touch of them, and Dash's dcc.Store (the theme) then takes
// the whole page down.  There, a store in the page's memory stands in: the theme is not remembered, the page works.
(function () {
  function memoryStorage() {
    const items = new Map();
    return {
      getItem: (k) => (items.has(String(k)) ? items.get(String(k)) : null),
      setItem: (k, v) => { items.set(String(k), String(v)); },
      removeItem: (k) => { items.delete(String(k)); },
      clear: () => items.clear(),
      key: (i) => Array.from(items.keys())[i] ?? null,
      get length() { return items.size; },
    };
  }
  for (const name of ["localStorage", "sessionStorage"]) {
    try {
      window[name].getItem("mnistlab-probe");
    } catch (e) {
      Object.defineProperty(window, name, { value: memoryStorage(), configurable: true });
    }
  }
})();
