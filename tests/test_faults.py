"""Fault injection: a training process is killed (SIGKILL) at every file-system operation of its first two
checkpoint saves (before the operation, and with the file it writes cut to half), and after each kill `last/` (or the
previous checkpoint it keeps aside) must load and the run must resume to exactly the weights of an uninterrupted run.
The runs use the toy model of tests/toy.py and tests/fault_run.py."""
import os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest
import torch
from aair_nb.core import set_seed
from aair_nb.train import fit, load_checkpoint, recover_checkpoint, param_groups

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from toy import PairSet, DualLinear
from fault_run import CFG, DATA

ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def _run(out:Path, k:int, mode:str='before') -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE/'fault_run.py'), str(out), str(k), mode], capture_output=True, text=True,
                          timeout=300, env=ENV)


def _ops(r) -> list: return [l.split(': ', 1)[1] for l in r.stdout.splitlines() if l.startswith('op ')]


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "The uninterrupted run, in a child process like the killed ones: its final weights and its operation sequence."
    out = tmp_path_factory.mktemp('ref')/'run'
    r = _run(out, 0)
    assert r.returncode == 0 and 'finished' in r.stdout, r.stderr
    m = DualLinear(); load_checkpoint(out/'last', m)
    return m.state_dict(), _ops(r)


def _kill_points(ops:list) -> list:
    "Every operation up to the third checkpoint save: the run's first files, the first save, and one that replaces a checkpoint."
    saves = [i for i, op in enumerate(ops) if op == 'save_model']           # each save: rmtree, rmtree, save_model, ...
    return list(range(1, saves[2] - 1))

def _first_swap(ops:list) -> int:
    "The operation (1-based) that renames the first complete checkpoint into place."
    return ops.index('os.replace', ops.index('torch.save')) + 1


def _resumed_state(out:Path) -> dict:
    torch.set_num_threads(1)
    set_seed(0); m = DualLinear()                          # as fault_run.py (a kill before the first save: a fresh start)
    torch.rand(7)                                          # and a process state of its own: resuming must restore the run's
    fit(m, PairSet(**DATA), CFG, out, resume=True)
    return m.state_dict()


def test_kill_at_every_checkpoint_write(reference, tmp_path):
    ref_state, ops = reference
    assert {'save_model', 'torch.save', 'os.replace', 'shutil.rmtree'} <= set(ops), ops
    cases = [(k, mode) for k in _kill_points(ops) for mode in (('before', 'half') if ops[k - 1] in ('save_model', 'torch.save') else ('before',))]
    assert len(cases) >= 20
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda c: (c, _run(tmp_path/f'k{c[0]}_{c[1]}', *c)), cases))
    threads = torch.get_num_threads()
    try:
        seen = set()
        for (k, mode), r in runs:
            out = tmp_path/f'k{k}_{mode}'
            assert r.returncode == -9, f"kill at op {k} ({mode}) did not happen: {r.returncode} {r.stderr[-500:]}"
            last = recover_checkpoint(out/'last')
            if (last/'model.safetensors').exists():            # a checkpoint on disk: it loads whole, with its training state
                st = load_checkpoint(last, DualLinear(), *_optim_triplet())
                seen.add(st['step'])
            else:                                               # killed before the first save completed: no checkpoint at all
                assert k <= _first_swap(ops), f"op {k}: the first save had completed, but last/ is gone"
            state = _resumed_state(out)
            for (name, a), b in zip(ref_state.items(), state.values()):
                torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=lambda m: f"kill at op {k} ({mode}), {name}: {m}")
            assert not [p.name for p in out.iterdir() if p.name.startswith('.last.')], f"op {k}: stray folders left"
        assert seen >= {1}, seen
    finally: torch.set_num_threads(threads)


def _optim_triplet():
    "An optimizer and scheduler shaped like the trainer's, to load a checkpoint's states into."
    opt = torch.optim.AdamW(param_groups(DualLinear(), CFG.weight_decay), lr=CFG.lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
