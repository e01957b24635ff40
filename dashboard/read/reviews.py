"""Reviews a team keeps, stored in MLflow: each review is one run of the `reviews` experiment.

Its title is the run's name and its narrative the run's description (mlflow.note.content), so MLflow's own UI
shows both; the decision, its reasons, the authors, the embedded views and the linked runs are tags (names in
training.contract).  It lives, is backed up and travels with the store, and works through a tracking server.

Two people never silently overwrite each other:
- a save carries the version it was loaded at, and first logs the param review.version.<loaded + 1>.  MLflow
  never lets a param change value, so of two saves made from the same version exactly one can log it (the SQL
  store's primary key decides); the other is refused with a StaleReview, one line, and writes nothing;
- comments are params too (review.comment.<time>-<nonce>): each has its own key, so two at once both land, and
  none can be edited or lost afterwards;
- adding a view (from another page) is its own tag and bumps no version: it never makes an open editor stale.

No Dash here: the pages call these functions and show their one-line errors.
"""
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from dashboard.read import store
from training import contract as C

# MLflow's own limits (mlflow.utils.validation: MAX_TAG_VAL_LENGTH 8000, MAX_PARAM_VAL_LENGTH 6000): a narrative
# over its tag's limit could not be stored, so it is refused with its size, never cut.
NARRATIVE_MAX = 8000
REASONS_MAX = 4000
DECISION_MAX = 500
TITLE_MAX = 200
AUTHOR_MAX = 100
COMMENT_MAX = 2000  # its JSON (escapes included) stays within a param's 6000 characters
URL_MAX = 2000
RUN_IN_URL = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
ANONYMOUS = "anonymous"


class ReviewError(Exception):
    """A review that cannot be read or a change that cannot be made: one line for the page."""


class StaleReview(ReviewError):
    """Someone saved the review after this editor loaded it: nothing was written."""


@dataclass
class Comment:
    stamp: str
    author: str
    text: str

    @property
    def time_ms(self) -> int:
        return int(self.stamp.split("-")[0])


@dataclass
class Review:
    review_id: str
    title: str
    narrative: str = ""
    decision: str = ""
    reasons: str = ""
    authors: list[str] = field(default_factory=list)
    created_ms: int = 0
    updated_ms: int = 0
    version: int = 1
    last_saved_by: str = ""
    views: list[tuple[str, str]] = field(default_factory=list)  # (stamp, URL), oldest first
    comments: list[Comment] = field(default_factory=list)  # oldest first
    linked_runs: list[str] = field(default_factory=list)


def _stamp() -> str:
    """A key suffix that sorts by time and that no two writers share."""
    return f"{int(time.time() * 1000):013d}-{secrets.token_hex(4)}"


def _now_ms() -> str:
    return str(int(time.time() * 1000))


def _one_line(e: Exception) -> str:
    return str(getattr(e, "message", e)).splitlines()[0][:300] if str(e) else type(e).__name__


def _experiment_id(create: bool) -> str | None:
    try:
        exp = store.client().get_experiment_by_name(C.REVIEWS_EXPERIMENT)
        if exp is None and create:
            return store.client().create_experiment(C.REVIEWS_EXPERIMENT,
                                               tags={C.TAG_EXPERIMENT_KIND: C.EXPERIMENT_KIND})
    except MlflowException as e:
        raise ReviewError(f"Cannot reach the reviews in the MLflow store: {_one_line(e)}") from None
    return exp.experiment_id if exp is not None else None


def check_length(what: str, text: str, limit: int) -> str:
    """The text, or ReviewError in one line when it is over its limit (never cut: the user would lose the rest)."""
    text = text or ""
    if len(text) > limit:
        raise ReviewError(f"Not saved: the {what} is {len(text):,} characters long, over the limit of {limit:,}; "
                          f"shorten it and save again.")
    return text


def _author(author: str | None) -> str:
    return check_length("author name", (author or "").strip(), AUTHOR_MAX) or ANONYMOUS


def view_path(url: str) -> str:
    """A dashboard address as a review keeps it: path and query of this app, nothing else (no other site)."""
    text = (url or "").strip()
    parts = urlsplit(text)
    if parts.scheme not in ("", "http", "https") or (parts.netloc and not parts.scheme) \
            or not parts.path.startswith("/") or parts.path.startswith("//"):
        raise ReviewError(f"'{text[:80]}' is not an address of this dashboard (expected a path such as "
                          f"/compare?runs=...)")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return check_length("view address", path, URL_MAX)


def runs_in(url: str) -> list[str]:
    """The run ids an address names: in its path (/runs/<id>/...) and in its query (runs=<id>,<id>, compare=...)."""
    parts = urlsplit(url)
    found = RUN_IN_URL.findall(parts.path)
    for values in parse_qs(parts.query).values():
        for value in values:
            found += RUN_IN_URL.findall(value)
    return list(dict.fromkeys(found))


def _get(review_id: str):
    """The review's run, or ReviewError if the id is malformed, unknown, deleted or not a review."""
    if not isinstance(review_id, str) or not store.RUN_ID_RE.match(review_id):
        raise ReviewError(f"'{str(review_id)[:64]}' is not a review id (32 hex characters)")
    try:
        run = store.client().get_run(review_id)
    except MlflowException:
        raise ReviewError(f"review {review_id} is not in the store") from None
    if run.info.lifecycle_stage == "deleted":
        raise ReviewError(f"review {review_id} was deleted")
    if run.info.experiment_id != _experiment_id(create=False):
        raise ReviewError(f"run {review_id} is not a review")
    return run


def _version(params: dict) -> tuple[int, str]:
    """The highest version claimed, and who claimed it."""
    claims = {int(s): v for k, v in params.items()
              if (s := C.review_key_suffix(k, C.REVIEW_VERSION_PREFIX)) is not None and s.isdigit()}
    if not claims:
        return 1, ""
    top = max(claims)
    return top, claims[top].partition(" ")[2]


def _comments(params: dict) -> list[Comment]:
    out = []
    for key, value in params.items():
        if (stamp := C.review_key_suffix(key, C.REVIEW_COMMENT_PREFIX)) is None:
            continue
        try:
            body = json.loads(value)
            out.append(Comment(stamp, str(body.get("author", "")), str(body.get("text", ""))))
        except (ValueError, AttributeError):
            out.append(Comment(stamp, "", value))  # not ours: shown as it is, as text
    return sorted(out, key=lambda c: c.stamp)


def _authors(tags: dict) -> list[str]:
    try:
        authors = json.loads(tags.get(C.TAG_REVIEW_AUTHORS, "[]"))
    except ValueError:
        return []
    return [str(a) for a in authors] if isinstance(authors, list) else []


def _from_run(run) -> Review:
    tags, params = run.data.tags, run.data.params
    version, by = _version(params)
    views = sorted((s, url) for k, url in tags.items() if (s := C.review_key_suffix(k, C.REVIEW_VIEW_PREFIX)))
    linked = sorted(s for k in tags if (s := C.review_key_suffix(k, C.REVIEW_RUN_PREFIX)))
    updated = tags.get(C.TAG_REVIEW_UPDATED, "")
    return Review(review_id=run.info.run_id, title=run.info.run_name or "", narrative=tags.get(C.TAG_NOTE, ""),
                  decision=tags.get(C.TAG_REVIEW_DECISION, ""), reasons=tags.get(C.TAG_REVIEW_REASONS, ""),
                  authors=_authors(tags), created_ms=run.info.start_time or 0,
                  updated_ms=int(updated) if updated.isdigit() else run.info.start_time or 0,
                  version=version, last_saved_by=by, views=views, comments=_comments(params), linked_runs=linked)


def load(review_id: str) -> Review:
    return _from_run(_get(review_id))


def list_reviews() -> list[Review]:
    """Every review, the latest updated first ([] before the first one)."""
    exp = _experiment_id(create=False)
    if exp is None:
        return []
    try:
        runs = store.client().search_runs([exp], "", max_results=store.MAX_RUNS)
    except MlflowException as e:
        raise ReviewError(f"Cannot list the reviews: {_one_line(e)}") from None
    return sorted(map(_from_run, runs), key=lambda r: r.updated_ms, reverse=True)


def _authors_tag(review: Review | None, author: str) -> RunTag:
    authors = list(review.authors) if review else []
    if author != ANONYMOUS and author not in authors:
        authors.append(author)
    return RunTag(C.TAG_REVIEW_AUTHORS, json.dumps(authors, ensure_ascii=False))


def _link_tags(urls: list[str], decision: str = "") -> list[RunTag]:
    run_ids = [rid for url in urls for rid in runs_in(url)] + RUN_IN_URL.findall(decision or "")
    return [RunTag(C.review_run_tag(rid), C.TRUE) for rid in dict.fromkeys(run_ids)]


def create(title: str, author: str | None = None, first_view: str | None = None) -> str:
    """A new review (version 1), optionally with one embedded view.  Returns its id."""
    title = check_length("title", (title or "").strip(), TITLE_MAX) or "Untitled review"
    author = _author(author)
    views = [view_path(first_view)] if first_view else []
    exp = _experiment_id(create=True)
    tags = [_authors_tag(None, author), RunTag(C.TAG_REVIEW_UPDATED, _now_ms()), *_link_tags(views)]
    tags += [RunTag(C.review_view_tag(_stamp()), url) for url in views]
    try:
        run = store.client().create_run(exp, run_name=title, tags={t.key: t.value for t in tags})
        rid = run.info.run_id
        store.client().log_param(rid, C.review_version_param(1), f"{secrets.token_hex(4)} {author}")
        store.client().set_terminated(rid, C.STATUS_FINISHED)  # a document, not a job: never shown as running
    except MlflowException as e:
        raise ReviewError(f"Could not create the review: {_one_line(e)}") from None
    return rid


def save(review_id: str, loaded_version: int, *, title: str, narrative: str, decision: str, reasons: str,
         author: str | None = None) -> int:
    """Write the edited fields as version loaded_version + 1 and return it.  StaleReview (nothing written) if
    anyone saved since that version was loaded; ReviewError for a field over its limit."""
    title = check_length("title", (title or "").strip(), TITLE_MAX) or "Untitled review"
    narrative = check_length("narrative", narrative, NARRATIVE_MAX)
    decision = check_length("decision", (decision or "").strip(), DECISION_MAX)
    reasons = check_length("reasons", reasons, REASONS_MAX)
    author = _author(author)
    current = load(review_id)
    if current.version != int(loaded_version):
        raise _stale(current, loaded_version)
    try:  # the compare-and-set: only one save from this version can log the next version's param
        store.client().log_param(review_id, C.review_version_param(current.version + 1),
                            f"{secrets.token_hex(4)} {author}")
    except MlflowException:
        raise _stale(load(review_id), loaded_version) from None
    tags = [RunTag(C.TAG_NOTE, narrative), RunTag(C.TAG_REVIEW_DECISION, decision),
            RunTag(C.TAG_REVIEW_REASONS, reasons), RunTag(C.TAG_REVIEW_UPDATED, _now_ms()),
            _authors_tag(current, author), *_link_tags([], decision)]
    try:
        store.client().log_batch(review_id, tags=tags)
        if title != current.title:
            store.client().update_run(review_id, name=title)
    except MlflowException as e:
        raise ReviewError(f"Could not save the review: {_one_line(e)}") from None
    return current.version + 1


def _stale(current: Review, loaded_version) -> StaleReview:
    who = f" by {current.last_saved_by}" if current.last_saved_by not in ("", ANONYMOUS) else ""
    when = time.strftime("%H:%M:%S", time.localtime(current.updated_ms / 1000)) if current.updated_ms else "?"
    return StaleReview(f"Not saved: this review was saved{who} at {when} (version {current.version}) after you "
                       f"opened version {loaded_version}. Your text is still in the editor: copy it, reload, "
                       f"merge, and save again.")


def add_comment(review_id: str, text: str, author: str | None = None) -> Comment:
    """Append one comment: its own param, so concurrent comments all land and none can be changed afterwards."""
    text = check_length("comment", (text or "").strip(), COMMENT_MAX)
    if not text:
        raise ReviewError("The comment is empty: write something first.")
    author = _author(author)
    current = load(review_id)
    comment = Comment(_stamp(), author, text)
    try:
        store.client().log_param(review_id, C.review_comment_param(comment.stamp),
                            json.dumps({"author": author, "text": text}, ensure_ascii=False))
        store.client().log_batch(review_id, tags=[RunTag(C.TAG_REVIEW_UPDATED, _now_ms()), _authors_tag(current, author)])
    except MlflowException as e:
        raise ReviewError(f"Could not add the comment: {_one_line(e)}") from None
    return comment


def add_view(review_id: str, url: str) -> str:
    """Embed one more dashboard view (its address, with the state in its query).  Returns the path kept."""
    path = view_path(url)
    load(review_id)  # exists and is a review
    try:
        store.client().log_batch(review_id, tags=[RunTag(C.review_view_tag(_stamp()), path),
                                             RunTag(C.TAG_REVIEW_UPDATED, _now_ms()), *_link_tags([path])])
    except MlflowException as e:
        raise ReviewError(f"Could not add the view: {_one_line(e)}") from None
    return path


def missing_runs(review: Review) -> list[str]:
    """One line per linked run that is gone (deleted, or no longer in the store)."""
    gone = []
    for rid in review.linked_runs:
        try:
            store.get_run(rid)
        except store.StoreError as e:
            gone.append(str(e))
    return gone
