"""Training and evaluation speed of the `tiny` and `small` presets on the generated shapes set.

Training: median seconds of one optimizer step (forward with every loss, backward, AdamW) at batch 32 over
`--steps` timed steps after `--warmup` untimed ones, on batches collated beforehand (data loading is timed
separately), for `tiny` (pixels), `small` (pixels through the frozen EfficientNet-Lite0) and `small` on cached
EfficientNet features (how `small` trains on RSICD). Evaluation: `aair_nb.evaluate.evaluate` on the shapes test split
(250 images, 1,250 captions): encode, ITC rank, fusion re-rank of the top 16. Each setting runs in its own process,
so its peak resident memory is its own. Writes bench/results/speed.json and bench/results/speed.md.

    python bench/bench_speed.py                   # all settings, 20 timed steps each
    python bench/bench_speed.py --steps 50 --only tiny
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent/'results'
SETTINGS = ['tiny', 'small', 'small_cached']


def _model_and_data(setting:str, batch_size:int, n_batches:int):
    "The model of `setting` and `n_batches` training batches of the shapes set, collated in advance."
    from aair_nb.core import set_seed
    from aair_nb.data import default_shapes, load_karpathy, train_tokenizer, train_transform, eval_transform, Collate
    from aair_nb.encoders import load_pretrained_tokenizer
    from aair_nb.model import AAIR, AAIRConfig, CachedFeatureSet, CachedCollate, cache_image_features
    set_seed(0)
    root = default_shapes()
    ds = load_karpathy(root, split='train')
    cfg = AAIRConfig.preset(setting.split('_')[0])
    if cfg.text.kind == 'bert':
        tok = train_tokenizer(ds.captions, vocab_size=cfg.text.vocab_size); cfg.text.vocab_size = len(tok)
    else: tok = load_pretrained_tokenizer(cfg.text)
    model = AAIR(cfg)
    collate = Collate(tok, max_len=cfg.max_len)
    t0 = time.perf_counter()
    if setting.endswith('cached'):
        sub = ds.subset(batch_size * n_batches // 5 + 1)
        feats = cache_image_features(model.image_encoder, sub, eval_transform(cfg.image_size, mean=cfg.image_mean, std=cfg.image_std),
                                     progress=False)
        cds, collate = CachedFeatureSet(sub, feats), CachedCollate(collate)
        batches = [collate([cds[i % len(cds)] for i in range(b * batch_size, (b + 1) * batch_size)]) for b in range(n_batches)]
    else:
        ds.transform = train_transform(cfg.image_size, mean=cfg.image_mean, std=cfg.image_std)
        batches = [collate([ds[i] for i in range(b * batch_size, (b + 1) * batch_size)]) for b in range(n_batches)]
    data_s = (time.perf_counter() - t0) / n_batches
    return model, batches, data_s, tok, root


def one_train(setting:str, batch_size:int, steps:int, warmup:int) -> dict:
    "Median optimizer-step time of `setting` (run in a child process)."
    torch.set_num_threads(os.cpu_count())
    model, batches, data_s, _, _ = _model_and_data(setting, batch_size, steps + warmup)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train(); ts = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        loss = model(b)['loss']; opt.zero_grad(); loss.backward(); opt.step()
        if i >= warmup: ts.append(time.perf_counter() - t0)
    step_s = statistics.median(ts)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return dict(setting=setting, batch_size=batch_size, timed_steps=steps, step_s_median=step_s, step_s_all=ts,
                steps_per_s=1 / step_s, pairs_per_s=batch_size / step_s, data_s_per_batch=data_s,
                trainable_params_M=n_train / 1e6, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def one_eval(setting:str, rerank_k:int=16) -> dict:
    "Evaluation cost of `setting` on the shapes test split (an untrained model: the cost does not depend on the weights)."
    from aair_nb.data import load_karpathy
    from aair_nb.evaluate import evaluate
    model, _, _, tok, root = _model_and_data(setting, 1, 1)
    test = load_karpathy(root, split='test')
    r = evaluate(model.eval(), test, tok, rerank_k=rerank_k, progress=False)
    return dict(setting=f'{setting} eval', n_images=test.n_images, n_captions=len(test), **r['timings'],
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def child(args, kind:str) -> dict:
    "Run `kind` ('setting:train' or 'setting:eval') in a fresh process and return its JSON result."
    cmd = [sys.executable, __file__, '--_child', kind, '--batch_size', str(args.batch_size),
           '--steps', str(args.steps), '--warmup', str(args.warmup)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def markdown(res:list, meta:dict) -> str:
    "The results as two Markdown tables."
    lines = [f"Measured {meta['date']} on {meta['cpus']} CPU cores ({meta['machine']}), torch {meta['torch']}, "
             f"{meta['threads']} threads; medians of {meta['steps']} timed steps after {meta['warmup']} warm-up steps.", '',
             '| training setting | batch | step (s, median) | steps/s | pairs/s | trainable params (M) | peak RSS (MB) |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for r in res:
        if 'step_s_median' in r:
            lines.append(f"| {r['setting']} | {r['batch_size']} | {r['step_s_median']:.3f} | {r['steps_per_s']:.2f} | "
                         f"{r['pairs_per_s']:.0f} | {r['trainable_params_M']:.1f} | {r['peak_rss_mb']:.0f} |")
    lines += ['', '| evaluation (shapes test: 250 images, 1,250 captions) | encode (s) | ITC rank (s) | re-rank top-16 (s) | '
              're-rank ms/query | fusion pairs | peak RSS (MB) |', '|---|---:|---:|---:|---:|---:|---:|']
    for r in res:
        if 'encode_s' in r:
            lines.append(f"| {r['setting']} | {r['encode_s']:.2f} | {r['rank_s']:.4f} | {r.get('rerank_s', 0):.2f} | "
                         f"{r.get('rerank_ms_per_query', 0):.2f} | {r.get('rerank_pairs', 0)} | {r['peak_rss_mb']:.0f} |")
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--only', nargs='*', default=SETTINGS, choices=SETTINGS)
    p.add_argument('--batch_size', type=int, default=32)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--no_eval', action='store_true')
    p.add_argument('--_child', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    if a._child:
        setting, kind = a._child.split(':')
        r = one_train(setting, a.batch_size, a.steps, a.warmup) if kind == 'train' else one_eval(setting)
        print(json.dumps(r)); return
    res = []
    for s in a.only:
        for kind in ['train'] + ([] if a.no_eval or s.endswith('cached') else ['eval']):
            r = child(a, f'{s}:{kind}'); res.append(r)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != 'step_s_all'}, flush=True)
    meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), machine=platform.machine(),
                torch=torch.__version__, threads=torch.get_num_threads(), steps=a.steps, warmup=a.warmup)
    OUT.mkdir(exist_ok=True)
    (OUT/'speed.json').write_text(json.dumps(dict(meta=meta, results=res), indent=2))
    (OUT/'speed.md').write_text(markdown(res, meta))
    print(markdown(res, meta))


if __name__ == '__main__': main()
