"""A grid's summary table: one row per config of the file, from what the store holds, then the mean and
sd over seeds of each config the file trains with several seeds."""
import json
import statistics

from training import contract as C
from training.sweep.cohort_runs import MAX_RESULTS, grid_runs_filter, is_child
from training.sweep.gridfile import GridSpec

NOT_RUN = "NOT RUN"


def _latest_child_per_config(runs) -> dict:
    """config hash -> its latest child run, a FINISHED one before any later failed or cut-off one."""
    latest = {}
    for r in runs:  # newest first
        h = r.data.tags.get(C.TAG_CONFIG_HASH)
        if is_child(r.data.tags):
            if h not in latest or (latest[h].info.status != C.STATUS_FINISHED and r.info.status == C.STATUS_FINISHED):
                latest[h] = r
    return latest


def summary_rows(spec: GridSpec, mlflow_client, exp_id: str) -> list[dict]:
    """One row per config of the file, from the store: its latest child run's results."""
    runs = mlflow_client.search_runs([exp_id], grid_runs_filter(spec.name), max_results=MAX_RESULTS,
                                     order_by=["attributes.start_time DESC"])
    latest = _latest_child_per_config(runs)
    keys = dict.fromkeys(k for c in spec.configs for k in c.training_dict())  # options at their default drop out
    varying = [k for k in keys if len({str(c.training_dict().get(k)) for c in spec.configs}) > 1]
    rows = []
    for c in spec.configs:
        r = latest.get(c.config_hash)
        label = c.run_name or " ".join(f"{k}={c.as_params()[k]}" for k in varying) or c.display_name
        seedless = (c.run_name.removesuffix(f" seed {c.seed}") if c.run_name else
                    " ".join(f"{k}={c.as_params()[k]}" for k in varying if k != C.PARAM_SEED) or c.display_name)
        row = {"config": label, "status": NOT_RUN, "final": None, "best": None, "time": None, "run_id": "",
               "replicate_of": replicate_key(c), "replicate_label": seedless}
        if r is not None:
            hist = sorted(mlflow_client.get_metric_history(r.info.run_id, C.TEST_ACC), key=lambda m: m.step)
            row.update(status=r.info.status, run_id=r.info.run_id,
                       final=hist[-1].value if hist else None, best=max(m.value for m in hist) if hist else None,
                       time=(r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None)
        rows.append(row)
    return sorted(rows, key=lambda row: -(row["final"] if row["final"] is not None else -1))


def replicate_key(config) -> str:
    """What a config trains, its seed aside: configs with equal keys are replicates of one another."""
    d = config.training_dict()
    d.pop(C.PARAM_SEED)
    return json.dumps(d, sort_keys=True, default=list)


def replicate_rows(rows: list[dict]) -> list[dict]:
    """Per config trained with several seeds, in the order first met: n, mean and sample sd of the final
    test accuracy over its FINISHED seeds.  Replicates train the same thing and share a label without the
    seed (a run name's trailing "seed N" dropped), so a run named apart stays apart."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["replicate_of"], row["replicate_label"]), []).append(row)
    out = []
    for members in groups.values():
        finals = [r["final"] for r in members if r["status"] == C.STATUS_FINISHED and r["final"] is not None]
        if len(members) < 2:
            continue
        out.append({"config": members[0]["replicate_label"], "n": len(finals), "of": len(members),
                    "mean": statistics.fmean(finals) if finals else None,
                    "sd": statistics.stdev(finals) if len(finals) > 1 else None})
    return out


def print_summary(rows: list[dict]) -> None:
    width = max([len("config")] + [len(r["config"]) for r in rows])
    print(f"\n{'config':<{width}}  {'final':>7}  {'best':>7}  {'status':<9} {'time':>7}  run")
    fmt = lambda v: f"{v:7.2%}" if v is not None else "      -"
    for r in rows:
        t = f"{r['time']:6.0f}s" if r["time"] is not None else "      -"
        print(f"{r['config']:<{width}}  {fmt(r['final'])}  {fmt(r['best'])}  {r['status']:<9} {t}  {r['run_id']}")
    replicates = replicate_rows(rows)
    if replicates:
        width = max(len(r["config"]) for r in replicates)
        print(f"\n{'over seeds':<{width}}  final test accuracy, mean ± sd (n FINISHED of seeds)")
        for r in replicates:
            mean = f"{r['mean']:7.2%}" if r["mean"] is not None else "      -"
            sd = f" ± {100 * r['sd']:.2f} pp" if r["sd"] is not None else ""
            print(f"{r['config']:<{width}}  {mean}{sd} (n={r['n']} of {r['of']})")
