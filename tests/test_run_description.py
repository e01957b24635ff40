"""Every run ends with a description (MLflow's mlflow.note.content) that says its config, how it ended, its
final accuracy and a health summary from what it logged, and starts with its source (CLI, grid file, script)."""
import pytest
from mlflow.entities import SourceType
from mlflow.tracking import MlflowClient

from tests.conftest import all_runs
from training import contract as C
from training.config import RunConfig
from training.location import tracking_uri
from training.tracking.lifecycle import INTERRUPTED, Interrupted, RunLifecycle
from training.tracking.run_description import config_in_words, describe, describe_grid, health, outcome

NIELSEN = RunConfig(sizes=(784, 30, 10), init="nielsen", val_size=10_000)


def epoch(train_loss, train_acc, test_acc, val_acc=None, dead=0.0, grad=0.1):
    m = {C.TRAIN_LOSS: train_loss, C.TRAIN_ACC: train_acc, C.TEST_LOSS: 0.1, C.TEST_ACC: test_acc,
         C.EPOCH_SECONDS: 1.0, C.grad_norm_key("fc1"): grad, C.grad_norm_key("fc2"): 2 * grad,
         C.dead_fraction_key("fc1"): dead}
    if val_acc is not None:
        m[C.VAL_LOSS], m[C.VAL_ACC] = 0.1, val_acc
    return m


HISTORY = [(0, epoch(0.45, 0.10, 0.09, 0.11)), (1, epoch(0.05, 0.93, 0.92, 0.94)),
           (2, epoch(0.03, 0.97, 0.951, 0.9502, dead=0.1, grad=0.012))]


def test_the_config_in_words_names_the_net_cost_init_optimizer_and_split():
    words = config_in_words(NIELSEN)
    for part in ("MLP 784-30-10", "sigmoid hidden units", "quadratic cost", "weights and biases drawn from N(0, 1)",
                 "SGD, learning rate 3, batch 10, 30 epochs, seed 0", "first 50,000 of the 60,000 training images",
                 "validated on the last 10,000", "10,000 test images"):
        assert part in words, part
    a = config_in_words(RunConfig(sizes=(784, 128, 10), activation="relu", loss="cross_entropy", init_std=0.01,
                                  optimizer="sgd", momentum=0.9, train_size=2000))
    assert "weights drawn from N(0, 0.01), biases 0" in a and "momentum 0.9" in a and "softmax" in a
    assert "validated" not in a and "first 2,000" in a
    assert "CNN" in config_in_words(RunConfig(arch="cnn")) and "PyTorch's default init" in config_in_words(RunConfig())


def test_a_finished_run_states_its_final_test_and_validation_accuracy_and_the_best_validation_epoch():
    text = outcome(C.STATUS_FINISHED, None, HISTORY)
    assert text == ("**FINISHED** after 2 epochs: test accuracy **95.10 %**, "
                    "validation 95.02 % (best 95.02 % at epoch 2).")
    peaked = HISTORY[:2] + [(2, epoch(0.03, 0.97, 0.93, 0.925))]
    assert "validation 92.50 % (best 94.00 % at epoch 1)" in outcome(C.STATUS_FINISHED, None, peaked)


def test_failed_and_killed_runs_say_what_happened_and_where_they_stopped():
    diverged = "diverged at epoch 2: train loss 1e+03 (NaN or inf); try a smaller lr"
    assert outcome(C.STATUS_FAILED, diverged, HISTORY[:2]) == (
        f"**FAILED**: {diverged}. At epoch 1, the last it logged: test accuracy **92.00 %**, "
        "validation 94.00 % (best 94.00 % at epoch 1).")
    killed = outcome(C.STATUS_KILLED, None, HISTORY[:1])
    assert killed.startswith("**KILLED**: stopped by Ctrl-C or SIGTERM. At epoch 0")
    assert outcome(C.STATUS_FAILED, "crashed: OSError: disk full", []) == (
        "**FAILED** before its first epoch was logged: crashed: OSError: disk full.")


def test_the_health_summary_reads_the_last_epoch_against_the_untrained_one():
    lines = health(NIELSEN, HISTORY)
    assert lines == ["Units saturated on every test image: fc1 10 %.",
                     "Train loss fell: 0.45 untrained, 0.03 at epoch 2.",
                     "Train accuracy 97.00 % vs test 95.10 % (gap +1.90 pp).",
                     "Mean gradient norm in the last epoch: fc1 0.012, fc2 0.024."]
    stuck = health(NIELSEN, HISTORY, (2, [0, 5, 5, 0, 1, 1, 1, 1, 1, 1]))
    assert stuck[1] == "Never predicts digits 0, 3 on the test images (epoch 2)." and stuck[2:] == lines[1:]
    assert health(NIELSEN, HISTORY, (2, [0] + [1] * 9))[1] == "Never predicts digit 0 on the test images (epoch 2)."
    assert health(NIELSEN, HISTORY, (2, [1] * 10))[1] == "Predicts all 10 classes on the test images."
    relu = RunConfig(sizes=(784, 16, 10), activation="relu", loss="cross_entropy")
    assert health(relu, HISTORY)[0] == "Units dead (0 on every test image): fc1 10 %."
    rising = [(0, epoch(0.3, 0.1, 0.1)), (1, epoch(0.9, 0.1, 0.1))]
    assert "Train loss did not fall: 0.3 untrained, 0.9 at epoch 1." in health(relu, rising)
    assert health(relu, []) == []


def test_the_description_is_markdown_with_the_three_parts():
    text = describe(NIELSEN, HISTORY, C.STATUS_FINISHED, None)
    words, result, summary = text.split("\n\n")
    assert words == config_in_words(NIELSEN) and result == outcome(C.STATUS_FINISHED, None, HISTORY)
    assert summary.splitlines() == ["Health at the end:"] + [f"- {line}" for line in health(NIELSEN, HISTORY)]


def test_a_grid_parent_says_its_file_and_how_many_configs_it_trained():
    text = describe_grid("seeds", "training/grids/seeds.yaml", 12, 5, C.STATUS_FAILED, None, 4)
    assert text == ("Grid **seeds** from `training/grids/seeds.yaml`: 12 configs, 7 already FINISHED before this "
                    "run, 5 trained here as nested runs. 4 of those 5 FINISHED.\n\n**FAILED**.")


def _note(run) -> str:
    return run.data.tags[C.TAG_NOTE]


@pytest.mark.slow
def test_a_cli_run_ends_with_its_description_and_source(capsys):
    from training.train import SOURCE, main
    assert main(["--sizes", "784,16,10", "--init", "nielsen", "--val-size", "1000", "--train-size", "2000",
                 "--epochs", "1", "--experiment", "described"]) == 0
    [run] = all_runs(experiment="described")
    final = {m.step: m.value for m in MlflowClient(tracking_uri()).get_metric_history(run.info.run_id, C.TEST_ACC)}[1]
    note = _note(run)
    assert note.startswith("An MLP 784-16-10 with sigmoid hidden units") and "first 2,000" in note
    assert f"**FINISHED** after 1 epoch: test accuracy **{100 * final:.2f} %**" in note
    assert "Units saturated on every test image: fc1 " in note and "Train loss fell" in note
    assert "Predicts all 10 classes on the test images." in note or "Never predicts dig" in note
    assert run.data.tags[C.TAG_SOURCE_NAME] == SOURCE
    assert run.data.tags[C.TAG_SOURCE_TYPE] == SourceType.to_string(SourceType.LOCAL)


@pytest.mark.slow
def test_failed_and_killed_runs_are_described_too():
    from training.nets.data import load
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client
    data = load()
    common = dict(sizes=(784, 16, 10), activation="relu", loss="cross_entropy", epochs=2, train_size=1000,
                  experiment="ends")
    diverging = RunConfig(lr=1e4, **common)
    sink = MlflowSink(client(), [diverging], data)
    with RunLifecycle(sink.runs):
        sink.finish(train_cohort([diverging], data, sink).params)

    class StopAfterEpoch0:  # a person pressing Ctrl-C once epoch 0 is logged
        def log_epoch(self, k, epoch, metrics, snapshot):
            if epoch == 1:
                raise KeyboardInterrupt
            killed.log_epoch(k, epoch, metrics, snapshot)

        def fail(self, k, reason):
            killed.fail(k, reason)
    stopped = RunConfig(lr=0.1, **common)
    killed = MlflowSink(client(), [stopped], data)
    with pytest.raises(Interrupted):
        with RunLifecycle(killed.runs, announce=False):
            train_cohort([stopped], data, StopAfterEpoch0())
    by_status = {r.info.status: r for r in all_runs(experiment="ends")}
    failed = _note(by_status[C.STATUS_FAILED])
    assert "**FAILED**: diverged at epoch 1" in failed and "At epoch 0, the last it logged" in failed
    killed_note = _note(by_status[C.STATUS_KILLED])
    assert f"**KILLED**: {INTERRUPTED}. At epoch 0, the last it logged: test accuracy" in killed_note
    assert all(r.data.tags[C.TAG_SOURCE_NAME] for r in by_status.values())  # this script, as MLflow would name it


@pytest.mark.slow
def test_a_grids_runs_name_the_grid_file_as_their_source_and_the_parent_is_described(tmp_path):
    from training.grid import main as grid_main
    grid = tmp_path / "tiny.yaml"
    grid.write_text("experiment: sourced\nbase: {sizes: [784, 16, 10], epochs: 1, train_size: 500}\n"
                    "grid: {seed: [0, 1]}\n")
    assert grid_main([str(grid)]) == 0
    runs = all_runs(experiment="sourced")
    assert len(runs) == 3 and {r.data.tags[C.TAG_SOURCE_NAME] for r in runs} == {str(grid)}
    [parent] = [r for r in runs if r.data.tags.get(C.TAG_GRID_PARENT) == C.TRUE]
    assert _note(parent).startswith(f"Grid **tiny** from `{grid}`: 2 configs, 0 already FINISHED")
    assert "2 of those 2 FINISHED" in _note(parent)
    assert all("**FINISHED** after 1 epoch:" in _note(r) for r in runs if r is not parent)
