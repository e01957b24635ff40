"""A grid's summary table: one row per config of the file, from what the store holds."""
from training import contract as C
from training.cohort_runs import MAX_RESULTS, grid_runs_filter, is_child
from training.gridfile import GridSpec

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
    varying = [k for k in spec.configs[0].training_dict()
               if len({str(c.training_dict().get(k)) for c in spec.configs}) > 1]
    rows = []
    for c in spec.configs:
        r = latest.get(c.config_hash)
        label = c.run_name or " ".join(f"{k}={c.as_params()[k]}" for k in varying) or c.display_name
        row = {"config": label, "status": NOT_RUN, "final": None, "best": None, "time": None, "run_id": ""}
        if r is not None:
            hist = sorted(mlflow_client.get_metric_history(r.info.run_id, C.TEST_ACC), key=lambda m: m.step)
            row.update(status=r.info.status, run_id=r.info.run_id,
                       final=hist[-1].value if hist else None, best=max(m.value for m in hist) if hist else None,
                       time=(r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None)
        rows.append(row)
    return sorted(rows, key=lambda row: -(row["final"] if row["final"] is not None else -1))


def print_summary(rows: list[dict]) -> None:
    width = max([len("config")] + [len(r["config"]) for r in rows])
    print(f"\n{'config':<{width}}  {'final':>7}  {'best':>7}  {'status':<9} {'time':>7}  run")
    fmt = lambda v: f"{v:7.2%}" if v is not None else "      -"
    for r in rows:
        t = f"{r['time']:6.0f}s" if r["time"] is not None else "      -"
        print(f"{r['config']:<{width}}  {fmt(r['final'])}  {fmt(r['best'])}  {r['status']:<9} {t}  {r['run_id']}")
