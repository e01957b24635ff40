"""One training run logs the whole tracking contract to MLflow, on real MNIST."""
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import all_runs
from training import contract as C
from training.config import RunConfig
from training.engine.loop import train_cohort
from training.nets.data import load
from training.tracking.mlflow_sink import MlflowSink, client, tracking_uri
from training.train import main as train_main


@pytest.fixture(scope="module")
def data():
    return load()


def _run(run_id):
    return MlflowClient(tracking_uri()).get_run(run_id)


def _only_run():
    runs = all_runs()
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_a_two_epoch_run_logs_every_metric_at_steps_0_1_2_and_a_snapshot_per_step(capsys):
    assert train_main(["--sizes", "784,16,10", "--activation", "relu", "--loss", "cross_entropy", "--lr", "0.1",
                       "--epochs", "2", "--train-size", "5000", "--experiment", "contract"]) == 0
    run = _only_run()
    c = MlflowClient(tracking_uri())
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mlp-784-16-10 relu sgd lr=0.1 bs=10"
    keys = list(C.EPOCH_METRICS) + [C.grad_norm_key("fc1"), C.grad_norm_key("fc2"), C.dead_fraction_key("fc1")]
    for key in keys:
        assert sorted(m.step for m in c.get_metric_history(rid, key)) == [0, 1, 2], key
    accs = {m.step: m.value for m in c.get_metric_history(rid, C.TEST_ACC)}
    assert accs[0] < 0.3 < 0.85 < accs[2]  # an untrained net guesses; two epochs learn
    p = run.data.params
    for key in C.CONFIG_PARAMS + (C.PARAM_ARCH_LABEL, C.PARAM_N_PARAMS, C.PARAM_DATASET, C.PARAM_LAYERS,
                                  C.PARAM_SHA256_PREFIX + "train-images-idx3-ubyte"):
        assert key in p, key
    assert p[C.PARAM_ARCH] == "mlp" and p[C.PARAM_ARCH_LABEL] == "mlp-784-16-10-relu"
    assert p[C.PARAM_N_PARAMS] == str(784 * 16 + 16 + 170)
    assert RunConfig.from_params(p) == RunConfig(sizes=(784, 16, 10), activation="relu", loss="cross_entropy",
                                                 lr=0.1, epochs=2, train_size=5000, experiment="contract")
    snaps = sorted(f.path for f in c.list_artifacts(rid, C.SNAPSHOT_DIR))
    assert snaps == [C.snapshot_path(e) for e in (0, 1, 2)]
    local = c.download_artifacts(rid, C.snapshot_path(2))
    with np.load(local, allow_pickle=False) as z:
        assert z[C.weight_key("fc1")].shape == (16, 784) and z[C.bias_key("fc2")].shape == (10,)
        assert z[C.PRED_CLASS].shape == (10000,) and z[C.PRED_CONFIDENCE].max() <= 1.0
        assert int(z[C.CONF_HIST_CORRECT].sum() + z[C.CONF_HIST_INCORRECT].sum()) == 10000
        assert len(z[C.act_edges_key("fc1")]) == len(z[C.act_hist_key("fc1")]) + 1
        acc = float((z[C.PRED_CLASS] == load().test_y.numpy()).mean())
        assert abs(acc - accs[2]) < 1e-6
        predicted = z[C.PRED_CLASS]
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == C.DATASET_NAME
    (model,) = [m for m in c.search_logged_models([run.info.experiment_id]) if m.source_run_id == rid]
    # The logged model is the final net: it predicts what the last snapshot recorded, image for image.
    import torch
    from training.nets import saved_model
    with torch.no_grad():
        logits = saved_model.load(f"models:/{model.model_id}")(load().test_x).numpy()
    assert np.array_equal(logits.argmax(1), predicted)
    out = capsys.readouterr().out
    assert f"run_id={rid}" in out and "test_acc=" in out and "wall=" in out


@pytest.mark.slow
def test_a_diverging_run_ends_failed_with_its_reason_and_keeps_what_it_logged(data):
    config = RunConfig(sizes=(784, 16, 10), activation="relu", loss="cross_entropy", lr=1e4, epochs=3,
                       train_size=1000, experiment="nan")
    sink = MlflowSink(client(), [config], data)
    sink.finish(train_cohort([config], data, sink).params)
    run = _run(sink.run_ids[0])
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags[C.TAG_FAILURE_REASON]
    steps = [m.step for m in MlflowClient(tracking_uri()).get_metric_history(run.info.run_id, C.TEST_ACC)]
    assert 0 in steps  # epoch 0 was logged before it blew up


@pytest.mark.slow
def test_a_diverging_config_does_not_disturb_its_cohort(data):
    good = RunConfig(sizes=(784, 16, 10), activation="relu", loss="cross_entropy", lr=0.1, epochs=2,
                     train_size=1000, experiment="cohort")
    bad = RunConfig(**{**good.__dict__, "lr": 1e4})
    alone = MlflowSink(client(), [good], data)
    alone.finish(train_cohort([good], data, alone).params)
    both = MlflowSink(client(), [bad, good], data)
    both.finish(train_cohort([bad, good], data, both).params)
    c = MlflowClient(tracking_uri())
    assert [_run(r).info.status for r in both.run_ids] == ["FAILED", "FINISHED"]
    a = [m.value for m in sorted(c.get_metric_history(alone.run_ids[0], C.TEST_ACC), key=lambda m: m.step)]
    b = [m.value for m in sorted(c.get_metric_history(both.run_ids[1], C.TEST_ACC), key=lambda m: m.step)]
    assert np.allclose(a, b, atol=1e-3)


def test_cli_rejects_impossible_values_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        from training.errors import exit_on_user_error
        exit_on_user_error(lambda: train_main(["--lr", "-1"]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: command line: lr=-1.0") and "\n" not in err


@pytest.mark.slow
def test_a_crash_mid_run_ends_it_failed_with_the_error_and_keeps_what_it_logged(monkeypatch):
    import training.train as train_module

    def crash_at_epoch_1(configs, data, sink, progress=None):
        class CrashingSink:  # a bug surfacing after epoch 0 was logged
            def log_epoch(self, k, epoch, metrics, snapshot):
                if epoch == 1:
                    raise RuntimeError("disk full")
                sink.log_epoch(k, epoch, metrics, snapshot)

            def fail(self, k, reason):
                sink.fail(k, reason)
        return train_cohort(configs, data, CrashingSink(), progress)

    monkeypatch.setattr(train_module, "train_cohort", crash_at_epoch_1)
    with pytest.raises(RuntimeError, match="disk full"):
        train_main(["--sizes", "784,16,10", "--epochs", "2", "--train-size", "1000", "--experiment", "crash"])
    run = _only_run()
    assert run.info.status == "FAILED"  # KILLED is kept for a person stopping it
    assert run.data.tags[C.TAG_FAILURE_REASON] == "crashed: RuntimeError: disk full"
    steps = [m.step for m in MlflowClient(tracking_uri()).get_metric_history(run.info.run_id, C.TEST_ACC)]
    assert steps == [0]
