"""Reviews stored in MLflow (issue #30): a real SQLite store per test (conftest's autouse fixture), no mocks.

A review is a run of the `reviews` experiment: its title the run's name, its narrative the run's description.
Saves carry the version they were loaded at and a stale one writes nothing; comments only append, and
concurrent ones all land; bad input is refused in one line; markup is text.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlflow.tracking import MlflowClient

from dashboard.read import reviews, store
from dashboard.views.reviews import narrative
from training import contract as C
from training.location import tracking_uri

RUN_A, RUN_B = "a" * 32, "b" * 32
pytestmark = pytest.mark.usefixtures("use_module_store")  # one store for the module: creating one costs seconds


def _run(rid):
    return MlflowClient(tracking_uri()).get_run(rid)


def test_a_review_is_a_run_whose_name_is_its_title_and_whose_description_is_its_narrative(log_run):
    rid = log_run("trained", curves={C.TEST_ACC: [0.1, 0.9]})
    review = reviews.create("Which lr?", "ann", first_view=f"http://127.0.0.1:8050/compare?runs={rid},{RUN_A}&smooth=0.5")
    version = reviews.save(review, 1, title="Which learning rate?", narrative="# Verdict\n\nlr **3.0** wins.",
                           decision=rid, reasons="best test accuracy on 3 seeds", author="bob")
    assert version == 2
    run = _run(review)
    exp = MlflowClient(tracking_uri()).get_experiment(run.info.experiment_id)
    assert exp.name == C.REVIEWS_EXPERIMENT and exp.tags[C.TAG_EXPERIMENT_KIND] == C.EXPERIMENT_KIND
    assert run.info.run_name == "Which learning rate?" and run.info.status == C.STATUS_FINISHED
    assert run.data.tags[C.TAG_NOTE] == "# Verdict\n\nlr **3.0** wins."  # MLflow's UI shows it as the description
    assert run.data.tags[C.review_run_tag(rid)] == C.TRUE and run.data.tags[C.review_run_tag(RUN_A)] == C.TRUE
    r = reviews.load(review)
    assert (r.title, r.decision, r.reasons, r.version) == ("Which learning rate?", rid,
                                                           "best test accuracy on 3 seeds", 2)
    assert r.authors == ["ann", "bob"] and r.last_saved_by == "bob"
    assert [url for _, url in r.views] == [f"/compare?runs={rid},{RUN_A}&smooth=0.5"]  # this app's path, state kept
    assert 0 < r.created_ms <= r.updated_ms
    assert reviews.list_reviews()[0].review_id == review  # the latest updated first


def test_added_views_keep_their_order_and_link_their_runs():
    review = reviews.create("t")
    reviews.add_view(review, f"/runs/{RUN_A}/neurons/1/3?epoch=2")
    reviews.add_view(review, f"/compare?runs={RUN_A},{RUN_B}")
    r = reviews.load(review)
    assert [u for _, u in r.views] == [f"/runs/{RUN_A}/neurons/1/3?epoch=2", f"/compare?runs={RUN_A},{RUN_B}"]
    assert r.linked_runs == [RUN_A, RUN_B]
    assert r.version == 1  # adding a view never makes an open editor stale


def test_a_stale_save_is_refused_in_one_line_and_writes_nothing():
    review = reviews.create("t")
    reviews.save(review, 1, title="t", narrative="Ann's text", decision="", reasons="", author="ann")
    with pytest.raises(reviews.StaleReview) as refused:
        reviews.save(review, 1, title="Bob's title", narrative="Bob's text", decision="x", reasons="y", author="bob")
    message = str(refused.value)
    assert "\n" not in message and "ann" in message and "version 2" in message and "still in the editor" in message
    r = reviews.load(review)
    assert (r.title, r.narrative, r.decision, r.version) == ("t", "Ann's text", "", 2)


def test_of_two_saves_from_the_same_version_exactly_one_lands():
    """The read check alone could let both through; the version param, which MLflow never lets change, cannot."""
    review = reviews.create("t")
    start = threading.Barrier(6)

    def save(i):
        start.wait()
        try:
            return reviews.save(review, 1, title="t", narrative=f"text {i}", decision="", reasons="", author=f"p{i}")
        except reviews.StaleReview:
            return None

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(save, range(6)))
    winners = [i for i, v in enumerate(results) if v is not None]
    assert len(winners) == 1 and results[winners[0]] == 2
    assert reviews.load(review).narrative == f"text {winners[0]}"


def test_comments_only_append_and_concurrent_ones_all_land():
    review = reviews.create("t")
    start = threading.Barrier(8)

    def comment(i):
        start.wait()
        return reviews.add_comment(review, f"comment {i}", f"person {i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(comment, range(8)))
    r = reviews.load(review)
    assert sorted(c.text for c in r.comments) == [f"comment {i}" for i in range(8)]
    assert {c.author for c in r.comments} == {f"person {i}" for i in range(8)}
    # A comment is a param: MLflow refuses to change it, so the thread can only grow.
    key = C.review_comment_param(r.comments[0].stamp)
    with pytest.raises(Exception):
        MlflowClient(tracking_uri()).log_param(review, key, '{"author": "x", "text": "rewritten"}')


@pytest.mark.parametrize("field, limit", [("narrative", reviews.NARRATIVE_MAX), ("reasons", reviews.REASONS_MAX),
                                          ("title", reviews.TITLE_MAX)])
def test_a_field_over_its_limit_is_refused_in_one_line_and_nothing_is_written(field, limit):
    review = reviews.create("t")
    fields = dict(title="t", narrative="n", decision="", reasons="")
    fields[field] = "x" * (limit + 1)
    with pytest.raises(reviews.ReviewError) as refused:
        reviews.save(review, 1, **fields)
    assert str(refused.value) == (f"Not saved: the {field} is {limit + 1:,} characters long, over the limit of "
                                  f"{limit:,}; shorten it and save again.")
    assert reviews.load(review).version == 1


def test_a_comment_over_its_limit_or_empty_is_refused():
    review = reviews.create("t")
    with pytest.raises(reviews.ReviewError, match="comment is 2,001 characters"):
        reviews.add_comment(review, "x" * 2001)
    with pytest.raises(reviews.ReviewError, match="empty"):
        reviews.add_comment(review, "   ")
    assert reviews.load(review).comments == []


def test_a_review_says_which_of_its_runs_are_gone(log_run):
    kept, deleted = log_run("kept"), log_run("deleted")
    review = reviews.create("t", first_view=f"/compare?runs={kept},{deleted},{RUN_B}")
    MlflowClient(tracking_uri()).delete_run(deleted)
    gone = reviews.missing_runs(reviews.load(review))
    said = {deleted: f"run {deleted} was deleted", RUN_B: f"run {RUN_B} is not in the store"}
    assert gone == [said[rid] for rid in sorted(said)]  # in the order of the review's linked runs: by id


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://evil.example//x", "//evil.example/x", "compare",
                                 "ftp://host/x", ""])
def test_only_addresses_of_this_dashboard_can_be_embedded(url):
    review = reviews.create("t")
    with pytest.raises(reviews.ReviewError, match="not an address of this dashboard"):
        reviews.add_view(review, url)


def test_bad_review_ids_and_training_runs_are_refused(log_run):
    rid = log_run("trained")
    reviews.create("t")
    with pytest.raises(reviews.ReviewError, match="is not a review id"):
        reviews.load("../etc/passwd")
    with pytest.raises(reviews.ReviewError, match="is not in the store"):
        reviews.load(RUN_A)
    with pytest.raises(reviews.ReviewError, match=f"run {rid} is not a review"):
        reviews.load(rid)


def test_the_runs_page_never_lists_the_reviews_experiment(log_run):
    log_run("trained", experiment="mnist")
    reviews.create("t")
    names = [e["name"] for e in store.experiments()]
    assert "mnist" in names and C.REVIEWS_EXPERIMENT not in names


def test_markup_in_a_narrative_is_text_and_nothing_remote_survives():
    out = narrative.to_html('<script>alert(1)</script>\n\n<img src="http://evil/x.png" onerror="x()">\n\n'
                            '![remote](https://evil.example/t.png) ![inline](data:image/png;base64,iVBORw0KGgo=)\n\n'
                            '[bad](javascript:alert(2)) [good](https://example.org/)\n\n**bold**')
    assert "<script" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&lt;img src=" in out  # raw HTML shown as text, never parsed
    assert "evil.example" not in out and 'src="data:image/png;base64,iVBORw0KGgo="' in out
    assert "javascript:" not in out.replace("[bad](javascript:alert(2))", "")  # an unparsed link is only text
    assert '<a href="https://example.org/" rel="noopener noreferrer nofollow">good</a>' in out
    assert "<strong>bold</strong>" in out


def test_the_export_is_one_file_with_its_figures_and_plotly_inside_and_every_name_as_text(log_run):
    from dashboard.views.reviews import export
    curves = {C.TRAIN_LOSS: [2.3, 0.6, 0.4], C.TEST_LOSS: [2.3, 0.7, 0.5], C.TRAIN_ACC: [0.1, 0.8, 0.9],
              C.TEST_ACC: [0.1, 0.79, 0.88]}
    a = log_run("<img src=x onerror=alert(1)>", curves=curves, params={C.PARAM_LR: "3.0"})
    b, gone = log_run("b", curves=curves, params={C.PARAM_LR: "1.0"}), log_run("gone")
    review = reviews.create("<script>alert('title')</script>", "<b>ann</b>", first_view=f"/compare?runs={a},{b}")
    reviews.save(review, 1, title="<script>alert('title')</script>", narrative="**ok** <script>alert(2)</script>\n\n"
                 "![x](https://evil.example/x.png)", decision=a, reasons="<i>why</i>", author="<b>ann</b>")
    reviews.add_comment(review, "</script><script>alert(3)</script>", "bob")
    reviews.add_view(review, f"/runs/{gone}")
    MlflowClient(tracking_uri()).delete_run(gone)
    page = export.export_html(review)
    scripts = page.count("<script")
    assert scripts == 2  # plotly.js and the one that draws the figures: nothing typed became a script
    assert "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;" in page and "&lt;b&gt;ann&lt;/b&gt;" in page
    assert "&lt;/script&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in page and "&lt;i&gt;why&lt;/i&gt;" in page
    assert "<strong>ok</strong> &lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "evil.example" not in page and 'src="http' not in page and "<iframe" not in page
    assert f"run {gone} was deleted" in page  # the gone run, named at the top and in its view
    assert page.count('class="review-figure"') == 4  # the compare page's four curves
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page  # the run's name, as text
    assert "Plotly.newPlot" in page and "default-src 'none'" in page


def test_the_signed_in_user_is_the_author_under_basic_auth(monkeypatch):
    import base64

    from flask import Flask

    from dashboard.serving import auth
    from dashboard.views.reviews.add_control import current_user
    monkeypatch.setenv(auth.ENV_USER, "ann")
    monkeypatch.setenv(auth.ENV_PASSWORD, "secret")
    login = base64.b64encode(b"ann:secret").decode()
    with Flask(__name__).test_request_context("/", headers={"Authorization": f"Basic {login}"}):
        assert current_user() == "ann"
    monkeypatch.delenv(auth.ENV_USER)
    monkeypatch.delenv(auth.ENV_PASSWORD)
    with Flask(__name__).test_request_context("/", headers={"Authorization": f"Basic {login}"}):
        assert current_user() is None  # auth off: the page asks for a name instead
