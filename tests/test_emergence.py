"""Unit emergence: the first epoch whose verdict is class-selective, counts per epoch, the emergence order."""
from common import neurons as N
from dashboard.analytics import emergence as E


def test_emergence_epoch_is_the_first_class_selective_verdict():
    epochs = [0, 1, 2, 5]
    verdicts = ["feature-selective", "dead", "class-selective (digit 3)", "feature-selective"]
    assert E.emergence_epoch(epochs, verdicts) == 2
    assert E.emergence_epoch(epochs, ["feature-selective"] * 4) is None


def test_layer_emergence_and_counts_follow_the_verdicts_epoch_by_epoch():
    by_epoch = [["feature-selective", "dead", "feature-selective"],
                ["class-selective (digit 1)", "dead", "feature-selective"],
                ["class-selective (digit 1)", "feature-selective", "class-selective (digit 7)"]]
    assert E.layer_emergence([0, 3, 6], by_epoch) == [3, None, 6]
    counts = E.kind_counts(by_epoch)
    assert counts["class"].tolist() == [0, 1, 2]
    assert counts["feature"].tolist() == [2, 1, 1]
    assert counts["dead"].tolist() == [1, 1, 0]
    assert E.emergence_order([3, None, 6, 3]) == [0, 3, 2, 1]


def test_verdict_kinds_cover_every_verdict_the_analytics_give():
    for v in (N.verdict(0.9, 4, [4] * 8, False), N.verdict(0.1, 4, [4] * 8, False), N.verdict(0, 0, [], True)):
        assert E.verdict_kind(v) in E.KINDS
