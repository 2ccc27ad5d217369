"""How should the fusion encoder re-rank? The depth k and the score it ranks by, on one trained run.

Loads a run folder written by `aair_train` (a model with a fusion encoder), encodes its validation and test splits
once each, and re-ranks every query's top-k for each k in --ks with the score

    ITM log-odds + w x ITC logit        (`AAIRConfig.rerank_itc` = w; w = 0: the ITM alone)

for each w in --weights, beside the first stage alone (k = 0). The setting to use is the one with the best validation
rsum (mR = rsum / 6 ranks the same); the test split is reported beside it, not used to choose. Writes
bench/results/rerank[_NAME].json and .md (NAME: the data set's folder name for data other than shapes), or the same
files in RESULTS.

    python bench/bench_rerank.py runs/tiny_shapes     # the main job's run
    python bench/bench_rerank.py RUNS/row5_seed0 --name "ladder: + ITM = AAIR, seed 0"   # a run kept by bench_ablation.py --keep RUNS
    python bench/bench_rerank.py --smoke              # 2 training steps on 8/4/4 shapes, then a 2 x 2 grid
"""
import argparse, json, os, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

from _bench import add_common, results_dir, tiny_shapes, portable

KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum', 'mR']


def grid(model, tok, cfg, split:str, ks:list, weights:list) -> list:
    "One row per setting on `split`: the first stage (k = 0), then every (w, k) re-ranking; recalls and seconds."
    from aair_nb.config import load_split
    from aair_nb.cli import _split_cache
    from aair_nb.evaluate import encode_dataset, similarities, pair_score_fn, two_way_metrics
    from aair_nb.fusion import rerank
    from aair_nb.metrics import retrieval_metrics
    ds = load_split(cfg.data, split)
    views = cfg.eval.views
    enc = encode_dataset(model, ds, tok, keep_locals=True, progress=False, cache=_split_cache(model, tok, cfg, ds, split, views, False),
                         views=views)
    sims = similarities(model, enc)                                           # [n_img, n_txt]
    rows = [dict(split=split, k=0, w=None, seconds=0., **retrieval_metrics(sims, ds.txt2img))]
    for w in weights:
        score = pair_score_fn(model, enc, rerank_itc=w)
        for k in ks:
            t0 = time.perf_counter()
            s_i2t, s_t2i, _ = rerank(sims, score, k)
            rows.append(dict(split=split, k=k, w=w, seconds=time.perf_counter() - t0, **two_way_metrics(s_i2t, s_t2i, ds.txt2img)))
    return rows


def markdown(rows:list, meta:dict) -> str:
    "Validation and test recalls of every setting, the best on validation marked."
    val = [r for r in rows if r['split'] == 'val']
    best = max(val, key=lambda r: r['rsum'])
    test = {(r['k'], r['w']): r for r in rows if r['split'] == 'test'}
    lines = [f"Run {meta['run']} ({meta['data']}); re-ranking score ITM log-odds + w x ITC logit of each query's top k. Measured "
             f"{meta['date']} on {meta['cpus']} CPU cores; seconds: re-ranking the test split. **Bold**: the best validation rsum.", '',
             '| k | w | val rsum | val mR | test i2t R@1 | test t2i R@1 | test rsum | test mR | seconds |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in val:
        t, b = test[(r['k'], r['w'])], '**' if r is best else ''
        lines.append(f"| {r['k'] or 'first stage'} | {'' if r['w'] is None else r['w']} | {b}{r['rsum']:.1f}{b} | {r['mR']:.1f} | "
                     f"{t['i2t_r1']:.1f} | {t['t2i_r1']:.1f} | {t['rsum']:.1f} | {t['mR']:.1f} | {t['seconds']:.1f} |")
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run', nargs='?', help="run folder written by aair_train, with a fusion encoder (not needed with --smoke)")
    p.add_argument('--ks', type=int, nargs='+', default=[4, 8, 16, 32], help="re-ranking depths")
    p.add_argument('--weights', type=float, nargs='+', default=[0., 0.5, 1., 2.], help="weights w of the ITC logit in the score")
    p.add_argument('--checkpoint', default='best', choices=['best', 'last'])
    p.add_argument('--name', default=None, help="how the table names the run (default: its folder)")
    a = add_common(p).parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    out = results_dir(a, 'bench_rerank')
    from aair_nb.cli import load_run, run_train
    with tempfile.TemporaryDirectory() as work:
        if a.smoke:
            a.run, a.ks, a.weights = str(Path(work)/'run'), [2, 4], [0., 1.]
            run_train(['--data', str(tiny_shapes(Path(work)/'shapes')), '--out', a.run, '--max-steps', '2', '--batch-size', '8', '--quiet'])
        elif a.run is None: p.error("give a run folder (or --smoke)")
        model, tok, cfg = load_run(a.run, a.checkpoint)
        if not model.can_rerank: raise SystemExit(f"bench_rerank: the model in {a.run} has no fusion encoder (w_itm = 0): nothing to re-rank")
        rows = grid(model, tok, cfg, 'val', a.ks, a.weights) + grid(model, tok, cfg, 'test', a.ks, a.weights)
        js = Path(cfg.data.json)
        folder = 'shapes' if js.name == 'dataset_shapes.json' else js.resolve().parent.name   # the generated set, or 'rsicd', ...
        data = 'smoke shapes' if a.smoke else portable(cfg.data.json)
        meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), run='smoke run' if a.smoke else a.name or portable(a.run),
                    data=data, checkpoint=a.checkpoint, ks=a.ks, weights=a.weights, **({'smoke': True} if a.smoke else {}))
    name = 'rerank' + ('' if a.smoke or folder == 'shapes' else '_' + folder)
    (out/f'{name}.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    (out/f'{name}.md').write_text(md := markdown(rows, meta))
    print(md); print(f"wrote {out/name}.json and {out/name}.md")


if __name__ == '__main__': main()
