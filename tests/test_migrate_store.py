"""Moving a store: every run of a real grid arrives in a new store, nested, with its histories, snapshots and model."""
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import all_runs, sqlite_uri
from training import contract as C
from training.errors import UserError
from training.grid import main as grid_main
from training.migrate_store import main as migrate_main, migrate

GRID = """
    experiment: moving
    base: {sizes: [784, 16, 10], activation: sigmoid, loss: cross_entropy, lr: 0.5, epochs: 2, train_size: 500}
    grid: {seed: [0, 1]}
"""


def copied_store(tmp_path, monkeypatch) -> tuple[str, str]:
    """A source store holding one real grid, copied once into an empty destination.  Returns (src, dst) URIs."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(src))
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(GRID))
    assert grid_main([str(path)]) == 0
    assert migrate_main(["--from", sqlite_uri(src), "--to", sqlite_uri(dst)]) == 0
    return sqlite_uri(src), sqlite_uri(dst)


@pytest.mark.slow
def test_a_migrated_store_holds_every_run_nested_with_histories_snapshots_and_models(tmp_path, monkeypatch, capsys):
    src_uri, dst_uri = copied_store(tmp_path, monkeypatch)
    src, dst = MlflowClient(src_uri), MlflowClient(dst_uri)
    before, after = all_runs(src_uri), all_runs(dst_uri)
    assert len(before) == len(after) == 3
    by_source = {r.data.tags[C.TAG_SOURCE_RUN]: r for r in after}
    assert by_source.keys() == {r.info.run_id for r in before}
    copy_ids = {r.info.run_id for r in after}

    for old in before:
        new = by_source[old.info.run_id]
        assert new.info.run_name == old.info.run_name and new.info.status == old.info.status == "FINISHED"
        assert (new.info.start_time, new.info.end_time) == (old.info.start_time, old.info.end_time)
        assert new.data.params == old.data.params
        assert new.data.metrics == old.data.metrics
        tags = {k: v for k, v in new.data.tags.items() if k not in (C.TAG_SOURCE_RUN, C.TAG_PARENT_RUN_ID)}
        assert tags == {k: v for k, v in old.data.tags.items() if k != C.TAG_PARENT_RUN_ID}
        if C.TAG_PARENT_RUN_ID in old.data.tags:  # children point at the parent's copy, not the old id
            assert new.data.tags[C.TAG_PARENT_RUN_ID] in copy_ids
            assert by_source[old.data.tags[C.TAG_PARENT_RUN_ID]].info.run_id == new.data.tags[C.TAG_PARENT_RUN_ID]
        for key in old.data.metrics:
            hist = lambda c, r: sorted((m.step, m.timestamp, m.value) for m in c.get_metric_history(r.info.run_id, key))
            assert hist(dst, new) == hist(src, old)
        assert [d.dataset.digest for d in new.inputs.dataset_inputs] == [d.dataset.digest for d in old.inputs.dataset_inputs]
        models = dst.search_logged_models([new.info.experiment_id], filter_string=f"source_run_id = '{new.info.run_id}'")
        assert len(models) == (0 if old.data.tags.get(C.TAG_GRID_PARENT) else 1)

    # The dashboard reads the copies: snapshots byte-for-byte, and the model loads and predicts as the original.
    import mlflow
    import torch
    from dashboard.read import store
    from training.nets import saved_model
    child = next(r for r in before if C.TAG_PARENT_RUN_ID in r.data.tags)
    for uri, rid in ((src_uri, child.info.run_id), (dst_uri, by_source[child.info.run_id].info.run_id)):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert store.snapshot_epochs(rid) == [0, 1, 2]
        snap = store.load_snapshot(rid, 2)
        model_uri = MlflowClient(uri).search_logged_models(
            [store.get_run(rid).info.experiment_id], filter_string=f"source_run_id = '{rid}'")[0].model_uri
        mlflow.set_tracking_uri(uri)
        out = saved_model.load(model_uri)(torch.ones(2, 784)).detach().numpy()
        np.testing.assert_array_equal(mlflow.pyfunc.load_model(model_uri).predict(np.ones((2, 784), np.float32)), out)
        if uri == src_uri:
            want_snap, want_out = snap, out
    assert snap.keys() == want_snap.keys() and all(np.array_equal(snap[k], want_snap[k]) for k in snap)
    np.testing.assert_allclose(out, want_out, rtol=1e-6)

    # A second migration copies nothing new.
    capsys.readouterr()
    assert migrate(src_uri, dst_uri) == {"moving": 0}
    assert len(all_runs(dst_uri)) == 3
    assert "0 run(s) copied, 3 already there" in capsys.readouterr().out


def test_migrating_from_a_store_that_is_not_there_says_so_in_one_line(tmp_path):
    with pytest.raises(UserError, match="no SQLite store at .*; pass the store to copy with --from"):
        migrate(sqlite_uri(tmp_path / "nowhere"), sqlite_uri(tmp_path))
    assert not (tmp_path / "nowhere").exists()
