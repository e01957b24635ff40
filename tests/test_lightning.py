"""The Lightning callback (training.own_loop.lightning): the Lightning example's run has the own-loop examples'
contract, alone and beside MLFlowLogger in the logger's own run, and ends FINISHED, FAILED or KILLED as a
logged_run does.  Real MNIST, a real SQLite store, real Lightning; trainings of one or two small epochs."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, all_runs
from training import contract as C
from training.location import tracking_uri

pytest.importorskip("lightning", reason="Lightning is the optional extra: make install-lightning")
from training.examples import lightning_mnist, writeup_d  # noqa: E402
from training.own_loop.lightning import MnistLabCallback  # noqa: E402

ARGS = ["--epochs", "2", "--train-size", "1000", "--experiment", "lightning"]


def _main(module, args, monkeypatch, capsys) -> str:
    """Run an example's main() in this process as its command line would; the id of the run it printed."""
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    module.main()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(C.STATUS_FINISHED), last
    return last.split()[1]


def _names(run_id: str) -> dict[str, set[str]]:
    client = MlflowClient(tracking_uri())
    run = client.get_run(run_id)

    def artifacts(path=None):
        return {p for f in client.list_artifacts(run_id, path) for p in (artifacts(f.path) if f.is_dir else [f.path])}
    return {"params": set(run.data.params), "metrics": set(run.data.metrics), "tags": set(run.data.tags),
            "artifacts": artifacts()}


@pytest.mark.slow
def test_the_lightning_example_logs_the_own_loop_contract_alone_and_beside_mlflowlogger(monkeypatch, capsys):
    own = _main(writeup_d, ARGS, monkeypatch, capsys)
    alone = _main(lightning_mnist, ARGS, monkeypatch, capsys)
    shared = _main(lightning_mnist, [*ARGS, "--mlflow-logger"], monkeypatch, capsys)
    assert len(all_runs(experiment="lightning")) == 3  # beside the logger: one run, the logger's
    ref, got, both = _names(own), _names(alone), _names(shared)
    assert got["params"] == both["params"] == ref["params"] | {"mlflow_logger"}  # the example's one extra option
    assert got["metrics"] == ref["metrics"]
    assert both["metrics"] == ref["metrics"] | {lightning_mnist.ACC, "epoch"}  # what the module and the logger log
    assert ref["tags"] <= got["tags"] and ref["tags"] <= both["tags"]
    assert got["artifacts"] == both["artifacts"] == ref["artifacts"]
    client = MlflowClient(tracking_uri())
    runs = {name: client.get_run(r) for name, r in (("own", own), ("alone", alone), ("shared", shared))}
    assert {r.info.status for r in runs.values()} == {C.STATUS_FINISHED}
    assert runs["shared"].data.tags[C.TAG_RUN_NAME] and runs["shared"].data.params[C.PARAM_LAYERS] == "fc1,fc2,fc3"
    # The same net, seed and batches through Lightning: the same numbers as the own loop, epoch by epoch.
    for key in (C.TEST_ACC, C.TEST_LOSS, C.TRAIN_LOSS, C.TRAIN_ACC):
        curves = {n: [(m.step, m.value) for m in client.get_metric_history(r, key)]
                  for n, r in (("own", own), ("alone", alone), ("shared", shared))}
        assert [s for s, _ in curves["alone"]] == [s for s, _ in curves["own"]] == [s for s, _ in curves["shared"]]
        for n in ("alone", "shared"):
            assert [v for _, v in curves[n]] == pytest.approx([v for _, v in curves["own"]], rel=1e-4, abs=1e-6), key


class Exploding(lightning_mnist.LitNet):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise ValueError("the loader ran dry")
        return super().training_step(batch, batch_idx)


@pytest.mark.slow
@pytest.mark.parametrize("with_logger", [False, True], ids=["alone", "mlflowlogger"])
def test_an_exception_in_training_ends_the_run_failed_with_the_error_and_keeps_its_epochs(with_logger):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from training.nets.data import load
    data = load(train_size=256)
    loader = DataLoader(TensorDataset(data.train_x.reshape(-1, 1, 28, 28), data.train_y), batch_size=64)
    logger = lightning_mnist.mlflow_logger("failing") if with_logger else False
    cb = MnistLabCallback(experiment="failing")
    trainer = L.Trainer(max_epochs=3, callbacks=[cb], logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="the loader ran dry"):
        trainer.fit(Exploding(), loader)
    (run,) = all_runs(experiment="failing")
    assert run.info.run_id == cb.run.run_id
    assert run.info.status == C.STATUS_FAILED
    assert run.data.tags[C.TAG_FAILURE_REASON] == "crashed: ValueError: the loader ran dry"
    assert [m.step for m in MlflowClient(tracking_uri()).get_metric_history(run.info.run_id, C.TEST_ACC)] == [0, 1]


WAITING = textwrap.dedent("""
    import sys, time
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset
    from training.examples.lightning_mnist import LitNet, mlflow_logger
    from training.nets.data import load
    from training.own_loop.lightning import MnistLabCallback

    class Waiting(LitNet):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                print("logged", flush=True)
                while True:  # a long epoch, stopped from outside
                    time.sleep(0.05)
            return super().training_step(batch, batch_idx)

    data = load(train_size=128)
    loader = DataLoader(TensorDataset(data.train_x.reshape(-1, 1, 28, 28), data.train_y), batch_size=64)
    logger = mlflow_logger("waiting") if sys.argv[1] == "mlflowlogger" else False
    L.Trainer(max_epochs=5, callbacks=[MnistLabCallback(experiment="waiting")], logger=logger,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(Waiting(), loader)
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode, sig", [("alone", signal.SIGINT), ("mlflowlogger", signal.SIGTERM)],
                         ids=["alone-ctrl-c", "mlflowlogger-sigterm"])
def test_ctrl_c_or_sigterm_ends_the_run_killed_and_keeps_its_epochs(tmp_path, mode, sig):
    script = tmp_path / "waiting.py"
    script.write_text(WAITING)
    proc = subprocess.Popen([sys.executable, str(script), mode], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "logged", proc.stderr.read()[-2000:] if proc.poll() is not None else ""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    (run,) = all_runs(experiment="waiting")
    assert run.info.status == C.STATUS_KILLED, err[-2000:]
    assert [m.step for m in MlflowClient(tracking_uri()).get_metric_history(run.info.run_id, C.TEST_ACC)] == [0, 1]


class NoWeights(lightning_mnist.LitNet):
    """No Linear or Conv2d at all: nothing the dashboard could show."""

    def __init__(self):
        super().__init__()
        del self.fc1, self.fc2, self.fc3
        self.scale = torch.nn.Parameter(torch.ones(10))

    def forward(self, x):
        return x.flatten(1)[:, :10] * self.scale


def test_a_module_it_cannot_log_is_refused_in_one_line_before_any_run_or_training():
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from training.errors import UserError
    loader = DataLoader(TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)), batch_size=4)
    trainer = L.Trainer(max_epochs=1, callbacks=[MnistLabCallback()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(UserError) as refused:
        trainer.fit(NoWeights(), loader)
    assert "\n" not in str(refused.value) and str(refused.value)
    assert all_runs() == []


def test_without_lightning_the_callback_is_a_one_line_error_naming_the_install():
    script = ("import sys; sys.modules['lightning'] = None  # as if not installed\n"
              "from training.own_loop.lightning import MnistLabCallback\n"
              "from training.own_loop import script_main\n"
              "script_main(MnistLabCallback)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: Lightning is not installed: `make install-lightning` "
                                                "(or pip install -r requirements-lightning.txt)"]
