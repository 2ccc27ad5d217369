"""What the bench/ scripts share: where their results go, and the tiny data set their `--smoke` runs use.

Every script takes `--results DIR` (default: $AAIR_BENCH_RESULTS, else bench/results/) and `--smoke`: a run of a few
seconds through the same code as the real one, on tiny data, that writes only to a temporary folder (never to
bench/results/). tests/test_bench.py runs every smoke, so the scripts cannot drift from the library unnoticed.
"""
import argparse, os, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]             # the project folder
RESULTS = ROOT/'bench'/'results'                         # what the docs read
ENV = 'AAIR_BENCH_RESULTS'


def add_common(p:argparse.ArgumentParser) -> argparse.ArgumentParser:
    "The `--smoke` and `--results` options of every script."
    p.add_argument('--smoke', action='store_true',
                   help="a seconds-long run through the same code on tiny data; writes only to --results (default: a new temporary folder)")
    p.add_argument('--results', type=Path, default=None,
                   help=f"folder the result files are written to (default: ${ENV}, else bench/results; with --smoke: a new temporary folder)")
    return p


def results_dir(a:argparse.Namespace, name:str='bench') -> Path:
    "The folder results go to (created); a smoke run never gets bench/results, and computes on one thread."
    d = a.results or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    if a.smoke:
        one_thread()
        if d is None: d = Path(tempfile.mkdtemp(prefix=f'aair_{name}_smoke_'))
        if d.resolve() == RESULTS: sys.exit(f"{name}: --smoke never writes to {RESULTS}: give --results another folder")
    d = Path(d or RESULTS)
    d.mkdir(parents=True, exist_ok=True)
    return d


def one_thread():
    """Compute on one thread, here and in child processes: tiny tensors gain nothing from more, and on a busy machine
    (several smokes at once) more threads than free cores make every small op wait for the others."""
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'
    if 'torch' in sys.modules: sys.modules['torch'].set_num_threads(1)


def tiny_shapes(root, size:int=64) -> Path:
    "A shapes data set of 8 / 4 / 4 images in `root` (a fraction of a second to make); its Karpathy JSON."
    from aair_nb.shapes import make_shapes
    return make_shapes(root, n_train=8, n_val=4, n_test=4, size=size, seed=0)


def portable(path) -> str:
    """`path` relative to the project folder (e.g. ../shared/data/rsicd/dataset_rsicd.json), so that a result file and
    the docs built from it read the same on every clone, whatever folder the project sits in."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def rsicd_json() -> Path:
    "RSICD's Karpathy JSON where the library finds it (`aair_nb.data.rsicd_path`); exits with a message when it is missing."
    from aair_nb.data import rsicd_path
    d = rsicd_path()
    if d is None: sys.exit("RSICD not found: set AAIR_RSICD or place it at ../shared/data/rsicd")
    return d/'dataset_rsicd.json'


def train_setup(smoke:bool, work:Path, steps:int) -> tuple[Path, list]:
    """The data and `aair_train` flags of a benchmark that trains its own runs: with `smoke`, 2 steps on a tiny shapes
    set in `work`; otherwise RSICD with the `small` preset on cached features (bench_rsicd.py's flags), `steps` steps."""
    if smoke:
        data = tiny_shapes(work/'shapes')
        return data, ['--data', str(data), '--max-steps', '2', '--batch-size', '8', '--rerank-k', '0', '--quiet']
    from bench_rsicd import FLAGS
    data = rsicd_json()
    return data, ['--data', str(data), '--max-steps', str(steps), '--epochs', '100', '--quiet'] + FLAGS['small']


def start_flag(run:Path) -> str:
    "`aair_train`'s '--resume' for a stopped run in `run` (a last/ checkpoint, no metrics.json), else '--overwrite'."
    return '--resume' if (run/'last').exists() and not (run/'metrics.json').exists() else '--overwrite'


def ensure_run(run:Path, flags:list) -> Path:
    "Train `run` with `aair_train` flags unless it has finished (metrics.json); a stopped run resumes from its last checkpoint."
    if not (run/'metrics.json').exists():
        import time
        from aair_nb.cli import run_train
        how = start_flag(run)
        print(f"{'resuming' if how == '--resume' else 'training'} {run} ...", flush=True); t0 = time.time()
        run_train(['--out', str(run), how] + flags)
        print(f"{run.name}: trained in {(time.time() - t0) / 60:.1f} min", flush=True)
    return run
