// Names and roles that Dash 4's core components and Plotly's figures cannot be given from Python (they take no
// aria-* props), set on the page as they render.  tests/test_accessibility.py runs axe-core over every page to hold this.
(function () {
  // The <label> that names a control: one pointing at it (for=), else a <label> just before it, as the pages write
  // html.Label("Epoch") then the slider.
  function labelFor(el) {
    if (!el.id) return null;
    const pointing = document.querySelector('label[for="' + CSS.escape(el.id) + '"]');
    if (pointing) return pointing;
    const before = el.previousElementSibling;
    return before && before.tagName === "LABEL" ? before : null;
  }

  function nameBy(target, label, fallbackId) {
    if (!label.id) label.id = fallbackId;
    if (target.getAttribute("aria-labelledby") !== label.id) target.setAttribute("aria-labelledby", label.id);
  }

  function fix() {
    // dcc.Slider: its handle (Radix's role="slider" thumb) has no name, and Dash passes none through.
    document.querySelectorAll(".dash-slider-container[id]").forEach(function (box) {
      const label = labelFor(box);
      if (label) box.querySelectorAll('[role="slider"]').forEach(function (t) { nameBy(t, label, box.id + "-label"); });
    });
    // dcc.Checklist and dcc.RadioItems: a listbox whose options each wrap a real checkbox or radio.  An option may
    // not hold a focusable control (it hides its children from screen readers), so the native inputs, each named
    // by its own <label>, keep their native roles inside a plain group.
    // Not the dropdown's menu, the same options list where a listbox is right.
    document.querySelectorAll('.dash-checklist[role="listbox"], .dash-radioitems[role="listbox"]').forEach(function (list) {
      list.setAttribute("role", list.classList.contains("dash-radioitems") ? "radiogroup" : "group");
      const label = labelFor(list);
      if (label) nameBy(list, label, list.id + "-label");
    });
    document.querySelectorAll('.dash-checklist label[role="option"], .dash-radioitems label[role="option"], ' +
                              '.dash-checklist label[aria-selected], .dash-radioitems label[aria-selected]')
      .forEach(function (option) {
        option.removeAttribute("role");
        option.removeAttribute("aria-selected");  // React sets it again on each change of value: taken off again
      });
  }

  // Plotly draws a figure as SVG with no text alternative: each graph becomes a figure named by its title, else by
  // the heading of the card it sits in, and described by that card's note (.run-note, .figure-summary) if it has one.
  let made = 0;
  function idOf(el, stem) {
    if (!el.id) el.id = stem + "-" + (++made);
    return el.id;
  }

  function nameFigure(gd) {
    const title = gd.layout && gd.layout.title;
    const text = (typeof title === "string" ? title : (title && title.text) || "").replace(/<[^>]*>/g, " ").trim();
    const card = gd.closest("section, .card");
    const heading = card && card.querySelector("h2, h3, h4");
    const note = card && card.querySelector(".run-note, .figure-summary");
    gd.setAttribute("role", "figure");
    if (text) {
      gd.setAttribute("aria-label", text);
      gd.removeAttribute("aria-labelledby");
    } else if (heading) {
      gd.removeAttribute("aria-label");
      gd.setAttribute("aria-labelledby", idOf(heading, "figure-heading"));
    }
    if (note) gd.setAttribute("aria-describedby", idOf(note, "figure-note"));
  }

  function nameFigures() {
    document.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
      if (!gd.dataset.named && typeof gd.on === "function") {
        gd.dataset.named = "yes";
        gd.on("plotly_afterplot", function () { nameFigure(gd); });  // a new title with each new figure
      }
      nameFigure(gd);
    });
  }

  let queued = false;
  function schedule(records) {
    // Plotly redraws its SVG on every hover: nothing there to fix once the figure is named.
    if (queued || records.every(function (r) { return r.target.closest && r.target.closest(".js-plotly-plot[data-named]"); })) return;
    queued = true;
    requestAnimationFrame(function () { queued = false; fix(); nameFigures(); });
  }
  new MutationObserver(schedule).observe(document.documentElement, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["role", "aria-selected"]});
})();
