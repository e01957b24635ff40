"""Serving: the bind and sign-in rules, and what a page's browser loads before its first chart."""
