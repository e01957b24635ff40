"""A review's markdown narrative as safe HTML: the same on the review page and in the exported file.

markdown-it-py renders it with raw HTML off, so markup typed into the narrative comes out as text
(`<script>` reads as "<script>"); nh3 then keeps only the tags a narrative needs, and drops anything that would
fetch from elsewhere: an image whose source is not a data: URI inside the text is removed, so the exported file
opens without a network and the page asks no other site for anything.  No Dash here.
"""
import re

import nh3
from markdown_it import MarkdownIt

TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "em", "strong", "code", "pre", "blockquote",
        "a", "img", "table", "thead", "tbody", "tr", "th", "td", "hr", "br", "s"}
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"}}
INLINE_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")
LINK = re.compile(r"^(https?://|mailto:|#)", re.IGNORECASE)

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def _keep(tag: str, attribute: str, value: str) -> str | None:
    """Only inline images, and links that go somewhere a reader chooses to go (never javascript: or data:)."""
    if tag == "img" and attribute == "src":
        return value if INLINE_IMAGE.match(value) else None
    if tag == "a" and attribute == "href":
        return value if LINK.match(value) else None
    return value


def to_html(markdown: str) -> str:
    """The narrative as sanitised HTML (an empty string for an empty narrative)."""
    rendered = _md.render(markdown or "")
    return nh3.clean(rendered, tags=TAGS, attributes=ATTRIBUTES, attribute_filter=_keep,
                     url_schemes={"http", "https", "mailto", "data"}, link_rel="noopener noreferrer nofollow",
                     strip_comments=True)
