"""Grid files expand to validated configs and run as nested, resumable, failure-isolated MLflow runs."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, all_runs, sqlite_uri
from training import contract as C
from training.config import ConfigError
from training.grid import main as grid_main
from training.location import tracking_uri
from training.sweep.gridfile import load_grid
from training.train import main as train_main

QUICK = "training/grids/quick.yaml"


def write(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def store_is_untouched(uri: str) -> bool:
    """No run in the SQLite store at `uri`; checked without creating it when nothing ever wrote there."""
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return not db.exists() or all_runs(uri) == []


def history(run_id, key=C.TEST_ACC):
    hist = MlflowClient(tracking_uri()).get_metric_history(run_id, key)
    return [m.value for m in sorted(hist, key=lambda m: m.step)]


def test_grid_and_runs_expand_over_base(tmp_path):
    spec = load_grid(write(tmp_path, """
        experiment: study
        base: {sizes: [784, 20, 10], activation: sigmoid, loss: mse, seed: 0}
        grid: {lr: [2.5, 3.0], batch_size: [10, 20]}
        runs: [{epochs: 25, batch_size: 20, lr: 3.0}]
    """))
    assert len(spec.configs) == 5
    assert {(c.lr, c.batch_size) for c in spec.configs[:4]} == {(2.5, 10), (2.5, 20), (3.0, 10), (3.0, 20)}
    assert spec.configs[4].epochs == 25 and all(c.experiment == "study" for c in spec.configs)


@pytest.mark.parametrize("text, expected", [
    ("grid: {lr: [1.0]}\nbase: {colour: red}", "unknown key 'colour'"),
    ("grid: {lr: [-1]}", "lr=-1.0 must be > 0"),
    ("grid: {lr: [0]}", "lr=0.0 must be > 0"),
    ("runs: [{lr: fast}]", "lr='fast' should be a number"),
    ("runs: [{epochs: 0}]", "epochs=0 must be at least 1"),
    ("runs: [{batch_size: 0}]", "batch_size=0 must be between 1 and train_size"),
    ("runs: [{batch_size: 200, train_size: 100}]", "batch_size=200 must be between 1 and train_size (100)"),
    ("runs: [{sizes: [100, 10]}]", "sizes=(100, 10) must start at 784"),
    ("runs: [{sizes: [784, 30, 9]}]", "must start at 784 and end at 10"),
    ("grid: {}", "the grid is empty"),
    ("experiment: x", "the grid is empty"),
    ("grid: {lr: []}", "grid.lr=[] should be a non-empty list"),
    ("grid: {lr: [1.0]\nruns: [", "YAML syntax error at line"),
    ("sweep: {lr: [1.0]}", "unknown top-level key 'sweep'"),
    ("runs: [{lr: 1.0}, {lr: 1.0}]", "trains the same thing as config 1"),
])
def test_a_bad_grid_file_is_one_config_error_naming_the_file_and_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_grid(path)
    assert expected in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, named", [
    ("grid: {lr: [1.0]}\nbase: {colour: red}", "unknown key 'colour'"),
    ("grid: {lr: [1.0]}\nruns: [{epochs: 0}]", "epochs=0 must be at least 1"),
    ("grid: {lr: [1.0]\nruns: [", "YAML syntax error at line 2"),
])
def test_a_bad_grid_fails_before_any_run_with_one_line_naming_the_key(tmp_path, text, named):
    path = write(tmp_path, text)
    (tmp_path / "store").mkdir()
    uri = sqlite_uri(tmp_path / "store")
    result = subprocess.run([sys.executable, "-m", "training.grid", str(path)], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert result.stderr.startswith(f"error: {path}: ") and named in result.stderr
    assert result.stdout == ""
    assert store_is_untouched(uri)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.recursive(st.none() | st.booleans() | st.integers(-5, 800) | st.floats(allow_nan=True) | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                            st.sampled_from(["grid", "runs", "base", "lr", "sizes", "epochs", "experiment", "x"]),
                            inner, max_size=4), max_leaves=12))
def test_the_grid_parser_only_ever_raises_config_errors(tmp_path, doc):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        spec = load_grid(path)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:
        assert spec.configs


@pytest.mark.slow
def test_quick_grid_nests_children_under_one_parent_and_a_rerun_trains_nothing(capsys):
    assert grid_main([QUICK]) == 0
    runs = all_runs()
    parents = [r for r in runs if r.data.tags.get(C.TAG_GRID_PARENT) == C.TRUE]
    children = [r for r in runs if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert len(parents) == 1 and len(children) == 4 and parents[0].info.status == C.STATUS_FINISHED
    assert parents[0].data.params[C.PARAM_N_CONFIGS] == "4"
    c = MlflowClient(tracking_uri())
    grid_file = c.download_artifacts(parents[0].info.run_id, C.GRID_FILE_ARTIFACT)
    assert Path(grid_file).read_text() == Path(REPO / QUICK).read_text()
    assert all(r.data.tags[C.TAG_PARENT_RUN_ID] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" and r.data.tags[C.TAG_GRID_NAME] == "quick" for r in children)
    assert len({r.data.tags[C.TAG_CONFIG_HASH] for r in children}) == 4
    out = capsys.readouterr().out
    assert "final" in out and "best" in out and out.count("FINISHED") >= 4

    assert grid_main([QUICK]) == 0
    assert len(all_runs()) == len(runs)
    assert "nothing to train" in capsys.readouterr().out


@pytest.mark.slow
def test_a_diverging_config_fails_alone_and_the_grid_says_which(tmp_path, capsys):
    path = write(tmp_path, """
        experiment: divergence
        base: {sizes: [784, 16, 10], activation: relu, loss: cross_entropy, epochs: 2, train_size: 1000}
        grid: {lr: [0.1, 10000.0]}
    """)
    assert grid_main([str(path)]) == 1
    children = [r for r in all_runs() if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    status = {r.data.params["lr"]: r for r in children}
    assert status["10000.0"].info.status == "FAILED" and "diverged" in status["10000.0"].data.tags[C.TAG_FAILURE_REASON]
    assert status["0.1"].info.status == "FINISHED"
    assert "lr=10000.0" in capsys.readouterr().err

    # The failed config is retried on the next invocation; the finished one is not.
    assert grid_main([str(path)]) == 1
    children = [r for r in all_runs() if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert sorted(r.data.params["lr"] for r in children) == ["0.1", "10000.0", "10000.0"]


def test_every_run_of_a_grid_says_which_code_took_its_steps(tmp_path):
    from training.engine import native_kernel
    path = write(tmp_path, """
        experiment: step-paths
        base: {sizes: [784, 16, 10], activation: sigmoid, loss: cross_entropy, lr: 0.5, epochs: 1, train_size: 500}
        runs: [{optimizer: sgd}, {optimizer: adam, lr: 0.01}]
    """)
    assert grid_main([str(path)]) == 0
    children = {r.data.params["optimizer"]: r for r in all_runs() if r.data.tags.get(C.TAG_PARENT_RUN_ID)}
    kernel = native_kernel.kernel()  # plain SGD on an MLP takes the C kernel where it is built
    assert children["sgd"].data.tags[C.TAG_STEP_PATH] == ("torch" if kernel is None else kernel.path)
    assert children["adam"].data.tags[C.TAG_STEP_PATH] == "torch"


@pytest.mark.slow
def test_vectorised_grid_matches_each_config_trained_alone(tmp_path):
    path = write(tmp_path, """
        experiment: equivalence
        base: {sizes: [784, 20, 10], activation: sigmoid, loss: mse, epochs: 2, train_size: 3000, batch_size: 10}
        runs: [{lr: 3.0, seed: 0}, {lr: 1.0, seed: 1}, {lr: 0.5, seed: 2, momentum: 0.5}]
    """)
    assert grid_main([str(path)]) == 0
    children = {r.data.params["lr"]: r.info.run_id for r in all_runs() if r.data.tags.get(C.TAG_PARENT_RUN_ID)}
    for lr, seed, momentum in (("3.0", "0", "0"), ("1.0", "1", "0"), ("0.5", "2", "0.5")):
        train_main(["--sizes", "784,20,10", "--activation", "sigmoid", "--loss", "mse", "--epochs", "2",
                    "--train-size", "3000", "--batch-size", "10", "--lr", lr, "--seed", seed,
                    "--momentum", momentum, "--experiment", "alone"])
        alone = [r for r in all_runs(experiment="alone") if r.data.params["lr"] == lr][0]
        a, b = history(alone.info.run_id), history(children[lr])
        assert len(a) == len(b) == 3
        assert np.abs(np.array(a) - np.array(b)).max() <= 0.001, (lr, a, b)


@pytest.mark.slow
def test_two_workers_write_one_sqlite_store_without_losing_a_metric(tmp_path):
    path = write(tmp_path, """
        experiment: workers
        base: {sizes: [784, 16, 10], activation: sigmoid, loss: cross_entropy, lr: 0.5, epochs: 2, train_size: 1000}
        grid: {seed: [0, 1, 2, 3], batch_size: [10, 20]}
    """)
    assert grid_main([str(path), "--workers", "2"]) == 0
    children = [r for r in all_runs() if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    c = MlflowClient(tracking_uri())
    for r in children:
        for key in C.EPOCH_METRICS:
            assert sorted(m.step for m in c.get_metric_history(r.info.run_id, key)) == [0, 1, 2]
        assert len(c.list_artifacts(r.info.run_id, C.SNAPSHOT_DIR)) == 3


def test_dry_run_prints_the_expanded_configs_and_trains_nothing(capsys):
    assert grid_main([QUICK, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 configs" in out and "nothing trained" in out
    assert store_is_untouched(tracking_uri())


def test_the_summary_gives_mean_and_sample_sd_over_the_seeds_of_each_replicated_config(tmp_path, capsys):
    from training.sweep.grid_summary import print_summary, replicate_key, replicate_rows
    spec = load_grid(write(tmp_path, """
        base: {sizes: [784, 20, 10], epochs: 2}
        runs:
          - {run_name: "C seed 0", seed: 0}
          - {run_name: "C seed 1", seed: 1}
          - {run_name: "C seed 2", seed: 2}
          - {run_name: "D", lr: 0.5}
          - {run_name: "E", seed: 3}
    """))
    finals = [0.9402, 0.9391, 0.9385, 0.91, 0.95]
    rows = [{"config": c.run_name, "status": C.STATUS_FINISHED, "final": f, "best": f, "time": 1.0, "run_id": "r",
             "replicate_of": replicate_key(c), "replicate_label": c.run_name.removesuffix(f" seed {c.seed}")}
            for c, f in zip(spec.configs, finals)]
    [c] = replicate_rows(rows)  # E trains what C does, with its own seed, but is named apart
    assert (c["config"], c["n"], c["of"]) == ("C", 3, 3)
    assert c["mean"] == pytest.approx(np.mean(finals[:3])) and c["sd"] == pytest.approx(np.std(finals[:3], ddof=1))
    print_summary(rows)
    assert f"C  {np.mean(finals[:3]):7.2%} ± {100 * np.std(finals[:3], ddof=1):.2f} pp (n=3 of 3)" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted(str(p) for p in (REPO / "training" / "grids").glob("*.yaml")))
def test_every_shipped_grid_and_search_file_loads(path):
    spec = load_grid(path)
    assert spec.configs or (spec.search is not None and spec.search.trials > 0 and spec.search.space)
