"""Run a hyperparameter grid as one MLflow parent run with a nested child run per config.

    python -m training.grid training/grids/quick.yaml [--workers N | --ray [--ray-address ADDR]] [--dry-run]
    python -m training.grid a-search.yaml [--storage URL] [--dry-run]      # a file with a search: section

Configs that share shapes and step counts train together as one stacked
computation (see training.engine.loop).  Rerunning a file skips configs whose child
already FINISHED and reruns the ones that failed or were cut off.  A file with a `search:` section runs
an Optuna study instead (training.sweep.search_run), its trials the parent's children.
"""
import argparse

from training import contract as C
from training.engine.cohorts import cohort_key
from training.errors import UserError, exit_on_user_error
from training.sweep.gridfile import GridSpec, load_grid


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.grid", description=__doc__.splitlines()[0])
    p.add_argument("file", help="grid YAML file, e.g. training/grids/quick.yaml")
    p.add_argument("--workers", type=int, default=1, help="train cohorts in N processes at once")
    p.add_argument("--dry-run", action="store_true", help="print the expanded configs and train nothing")
    p.add_argument("--ray", action="store_true", help="run each cohort (a search: each claimant of its trials) as a Ray task "
                                                        "(pip install -r requirements-ray.txt)")
    p.add_argument("--ray-address", help="an existing Ray cluster, e.g. auto or ray://head:10001 (default: start one here)")
    p.add_argument("--storage", help="the Optuna study's storage for a search: default, beside a SQLite tracking "
                                     "store; needed with a tracking server")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.ray_address and not args.ray:
        p.error("--ray-address needs --ray")
    if args.ray and args.workers != 1:
        p.error("--workers and --ray do not mix: Ray places the cohorts")
    return args


def print_plan(spec: GridSpec) -> None:
    print(f"{spec.path}: {len(spec.configs)} configs, experiment '{spec.configs[0].experiment}'")
    for i, c in enumerate(spec.configs, 1):
        print(f"{i:3d}. {c.display_name:<48} epochs={c.epochs} seed={c.seed} hash={c.config_hash}")
    n_cohorts = len({cohort_key(c) for c in spec.configs})
    print(f"{n_cohorts} stacked cohort(s); nothing trained (--dry-run)")


def print_search_plan(spec: GridSpec) -> None:
    s = spec.search
    print(f"{spec.path}: a search of {s.trials} trials, experiment '{s.config({}).experiment}'")
    print(f"  sampler {s.sampler} (seed {s.seed}), pruner {s.pruner}, metric {s.metric} ({s.direction()}), "
          f"{s.epochs()} epochs a trial")
    fixed = {k: v for k, v in s.base.items() if k != C.PARAM_EXPERIMENT}
    print("  base: " + (", ".join(f"{k}={v}" for k, v in fixed.items()) or "RunConfig's defaults"))
    for d in s.space:
        (kind, values), = d.written().items()
        print(f"  {d.name:<14} {kind:<12} {values}")
    print("nothing trained (--dry-run)")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ray:
        from training.sweep import ray_runner  # Ray is an optional install
        ray_runner.import_ray()  # a missing Ray fails here, before any run exists
    spec = load_grid(args.file)
    if args.storage and spec.search is None:
        raise UserError(f"{args.file}: --storage is the Optuna study's storage, and this file has no search: section")
    if args.dry_run:
        if spec.search is not None:
            print_search_plan(spec)
        else:
            print_plan(spec)
        return 0
    if spec.search is not None:
        from training.sweep.search_run import run_search
        return run_search(spec, args)
    # Torch and MLflow load only once the file is known good: a bad file or --dry-run answers at once.
    from training.sweep.grid_run import run_grid
    from training.sweep.runners import make_runner
    return run_grid(spec, make_runner(args.workers, args.ray, args.ray_address), args.file)


if __name__ == "__main__":
    exit_on_user_error(main)
