"""Training and evaluation speed of the `tiny`, `small` and `medium` presets on the generated shapes set.

Training: median seconds of one optimizer step (forward with every loss, backward, AdamW) at batch 32 over
`--steps` timed steps after `--warmup` untimed ones, on batches collated beforehand (data loading is timed
separately), for `tiny` (pixels), `small` (pixels through the frozen EfficientNet-Lite0), and `small_rsicd` /
`medium_rsicd`: the model of bench_rsicd.py's recipe for that preset (the same `aair_train` flags: top layers of both
encoders trained, the frozen bottoms' outputs cached for the images and the captions of the timed batches).
Evaluation: `aair_nb.evaluate.evaluate` on the shapes test split
(250 images, 1,250 captions): encode, ITC rank, fusion re-rank of the top 16. Each setting runs in its own process,
so its peak resident memory is its own (under --smoke they share one). Writes bench/results/speed.json and
bench/results/speed.md (or the same files in RESULTS).

    python bench/bench_speed.py                   # all settings, 20 timed steps each
    python bench/bench_speed.py --steps 50 --only tiny
    python bench/bench_speed.py --smoke           # every setting, 1 timed step at batch 8 on 8/4/4 shapes images; temporary folder
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

import torch

from _bench import add_common, results_dir, tiny_shapes

SETTINGS = ['tiny', 'small', 'small_rsicd', 'medium_rsicd']
SMOKE = dict(batch_size=8, steps=1, warmup=1, threads=1)   # 8 consecutive captions span 2 images (ITM needs a negative)


def _model_and_data(setting:str, batch_size:int, n_batches:int, data:str|None=None):
    "The model of `setting` and `n_batches` training batches of the shapes set (or the Karpathy JSON `data`), collated in advance."
    from aair_nb.core import set_seed
    from aair_nb.shapes import default_shapes
    from aair_nb.data import load_karpathy, train_transform
    from aair_nb.contract import model_config, build
    from aair_nb.cache import FeatureCache, CachedFeatureSet, CachedCollate
    import aair_nb.model                                   # registers 'aair'
    set_seed(0)
    root = Path(data) if data else default_shapes()
    ds = load_karpathy(root, split='train')
    recipe = setting.endswith('_rsicd')
    cfg = rsicd_model_config(setting.split('_')[0], root) if recipe else model_config('aair', setting)   # `small` freezes EfficientNet-Lite0
    model, tok, collate = build('aair', cfg, captions=ds.captions)
    t0 = time.perf_counter()
    if recipe:                                             # the frozen bottoms' outputs, computed once (as on RSICD)
        sub = ds.subset(batch_size * n_batches // 5 + 1)
        cache = FeatureCache.build(sub, image_encoder=model.image_encoder, text_encoder=model.text_encoder, tokenizer=tok, progress=False)
        cds, collate = CachedFeatureSet(sub, cache), CachedCollate(collate, cache)
        batches = [collate([cds[i % len(cds)] for i in range(b * batch_size, (b + 1) * batch_size)]) for b in range(n_batches)]
    else:
        ds.transform = train_transform(cfg.image_size, mean=cfg.image_mean, std=cfg.image_std)
        batches = [collate([ds[i] for i in range(b * batch_size, (b + 1) * batch_size)]) for b in range(n_batches)]
    data_s = (time.perf_counter() - t0) / n_batches
    return model, batches, data_s, tok, root


def rsicd_model_config(preset:str, data:Path):
    "The model config bench_rsicd.py trains for `preset` (its `aair_train` flags, parsed by the CLI itself)."
    from aair_nb.cli import train_parser, run_config
    from bench_rsicd import FLAGS
    return run_config(train_parser().parse_args(FLAGS[preset] + ['--data', str(data)])).model


def one_train(setting:str, batch_size:int, steps:int, warmup:int, data:str|None=None, threads:int|None=None) -> dict:
    "Median optimizer-step time of `setting` (run in a child process)."
    torch.set_num_threads(threads or os.cpu_count())
    model, batches, data_s, _, _ = _model_and_data(setting, batch_size, steps + warmup, data)
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


def one_eval(setting:str, rerank_k:int=16, data:str|None=None) -> dict:
    "Evaluation cost of `setting` on the shapes test split (an untrained model: the cost does not depend on the weights)."
    from aair_nb.data import load_karpathy
    from aair_nb.evaluate import evaluate
    model, _, _, tok, root = _model_and_data(setting, 1, 1, data)
    test = load_karpathy(root, split='test')
    r = evaluate(model.eval(), test, tok, rerank_k=rerank_k, progress=False)
    return dict(setting=f'{setting} eval', n_images=test.n_images, n_captions=len(test), **r['timings'],
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


MARK = 'RESULT '   # the child's lines that carry a result

def child(args, kinds:list) -> list:
    "Run `kinds` ('setting:train' or 'setting:eval'), one after the other, in a fresh process; their JSON results."
    cmd = [sys.executable, __file__, '--_child', ','.join(kinds), '--batch_size', str(args.batch_size),
           '--steps', str(args.steps), '--warmup', str(args.warmup), '--threads', str(args.threads)] + (['--data', str(args.data)] if args.data else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    res = [json.loads(line[len(MARK):]) for line in r.stdout.splitlines() if line.startswith(MARK)]   # other output (a library's notice) is not a result
    if len(res) != len(kinds): raise RuntimeError(f"{' '.join(cmd)}: {len(res)} results for {len(kinds)} jobs; its output:\n{r.stdout[-3000:]}")
    return res


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
    ev = next((r for r in res if 'encode_s' in r), dict(n_images=250, n_captions=1250))
    lines += ['', f"| evaluation (shapes test: {ev['n_images']:,} images, {ev['n_captions']:,} captions) | encode (s) | ITC rank (s) | "
              're-rank top-16 (s) | re-rank ms/query | fusion pairs | peak RSS (MB) |', '|---|---:|---:|---:|---:|---:|---:|']
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
    p.add_argument('--data', default=None, help="Karpathy JSON to time on (default: the generated shapes set, 2000/250/250 images)")
    p.add_argument('--threads', type=int, default=os.cpu_count(), help="torch threads of the training steps (default: all CPU cores)")
    p.add_argument('--_child', default=None, help=argparse.SUPPRESS)
    a = add_common(p).parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    if a._child:
        for job in a._child.split(','):
            setting, kind = job.split(':')
            r = one_train(setting, a.batch_size, a.steps, a.warmup, a.data, a.threads) if kind == 'train' else one_eval(setting, data=a.data)
            print(MARK + json.dumps(r), flush=True)
        return
    out = results_dir(a, 'bench_speed')
    jobs = [f'{s}:{kind}' for s in a.only for kind in ['train'] + ([] if a.no_eval or s.endswith('_rsicd') else ['eval'])]
    with tempfile.TemporaryDirectory() as work:
        if a.smoke: vars(a).update(SMOKE, data=a.data or str(tiny_shapes(Path(work)/'shapes')))
        res = []
        for group in ([jobs] if a.smoke else [[j] for j in jobs]):   # a smoke run shares one process: its peak RSS is not per setting
            for r in child(a, group):
                res.append(r)
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != 'step_s_all'}, flush=True)
    meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), machine=platform.machine(),
                torch=torch.__version__, threads=a.threads, steps=a.steps, warmup=a.warmup,
                **({'smoke': True} if a.smoke else {}), **({'data': a.data} if a.data else {}))
    (out/'speed.json').write_text(json.dumps(dict(meta=meta, results=res), indent=2))
    (out/'speed.md').write_text(markdown(res, meta))
    print(markdown(res, meta))
    print(f"wrote {out/'speed.json'} and {out/'speed.md'}")


if __name__ == '__main__': main()
