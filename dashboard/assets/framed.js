// A page shown as a view inside a review (views/reviews/review_view.py's iframe, same origin) drops the top bar:
// the review around it has one, and the view's own would repeat it in every frame.
(function () {
  try {
    const frame = window.frameElement;
    if (frame && frame.classList.contains("review-frame")) document.documentElement.classList.add("in-review");
  } catch (e) { /* framed by another origin (a notebook): keep the bar */ }
})();
