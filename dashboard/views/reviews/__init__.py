"""Reviews: what the review pages, the "Add to review" control and the exported file show (issue #30)."""
