"""What fine-grained matching costs and buys: TERAN, IMRAM and AAIR's fusion encoder as second stages behind one first stage.

Trains (or takes) three runs on RSICD with the `small` preset on cached features (the flags of bench_rsicd.py, --steps
steps each): the main job's model `aair` (whose ITC ranking is the first stage for everyone, and whose fusion encoder
is one of the second stages), `teran` and `imram` (Text-IMRAM, K = 3). On the test split, each second stage re-scores
every query's top k of that first stage, for each k in --ks, and 'all' scores every pair (the model's own all-pairs
ranking, as the run's own test evaluation measured it in its metrics.json; AAIR's ITM over every pair is estimated from
its per-pair cost and skipped when over --max-minutes). IMRAM validates during training on the first 200 validation
images (`eval.val_images`): scoring every validation pair through its network would take about as long as its training.
Per row: Recall@K both ways, rsum, mR, seconds and milliseconds per query (the second stage only; encoding the split
once is reported apart). Each finished row is appended to bench/results/finegrained_rows.jsonl and skipped when the
script runs again; runs are kept in --work (default ~/.cache/aair_nb/bench_finegrained). Writes
bench/results/finegrained.{json,md}.

    python bench/bench_finegrained.py                  # RSICD
    python bench/bench_finegrained.py --models aair teran   # some second stages now, the others in a later run
    python bench/bench_finegrained.py --smoke          # 2 training steps each on an 8/4/4 shapes set; temporary folders only
"""
import argparse, json, os, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

from _bench import add_common, results_dir, portable, train_setup, ensure_run

KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum', 'mR']
MODELS = {'aair': [], 'teran': ['--model', 'teran'],   # IMRAM validates on 200 images: every val pair through its network is ~27 minutes
          'imram': ['--model', 'imram', '--set', 'model.mode=text', 'eval.val_images=200']}
LABELS = {'aair': "AAIR's fusion encoder (ITM)", 'teran': 'TERAN (MrSw)', 'imram': 'Text-IMRAM (K = 3)'}


def markdown(rows:list, meta:dict) -> str:
    first = next((r for r in rows if r['stage'] == 'first'), None)
    out = [f"Second stages on {meta['data']} test ({meta['cpus']} CPU cores, {meta['date']}); first stage: AAIR's ITC ranking"
           + (f" (rsum {first['test']['rsum']:.1f}, mR {first['test']['mR']:.1f})" if first else '') + "; ms per query = second-stage seconds / (images + captions).", '',
           '| second stage | k | R@1 i2t | R@5 i2t | R@1 t2i | R@5 t2i | rsum | mR | pairs scored | seconds | ms/query |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        if r['stage'] == 'first': continue
        if r.get('skipped'):
            out.append(f"| {LABELS[r['model']]} | {r['k']} | | | | | | | {r['pairs']:,} | ~{r['seconds']:.0f} (estimated, not run) | |"); continue
        t = r['test']
        out.append(f"| {LABELS[r['model']]} | {r['k']} | {t['i2t_r1']:.1f} | {t['i2t_r5']:.1f} | {t['t2i_r1']:.1f} | {t['t2i_r5']:.1f} | {t['rsum']:.1f} | "
                   f"{t['mR']:.1f} | {r['pairs']:,} | {r['seconds']:.1f} | {r['ms_per_query']:.1f} |")
    return '\n'.join(out) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=682, help="training steps of each run (682 = one RSICD epoch at batch 64)")
    p.add_argument('--ks', nargs='+', default=['16', '64', 'all'])
    p.add_argument('--max-minutes', type=float, default=30., help="skip an 'all' row whose estimated time is longer")
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS),
                   help="second stages to measure (aair is always trained: its ITC ranking is the first stage); rows of others already measured are kept")
    p.add_argument('--work', type=Path, default=Path('~/.cache/aair_nb/bench_finegrained').expanduser())
    a = add_common(p).parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    out = results_dir(a, 'bench_finegrained')
    from aair_nb.cli import load_run, _split_cache
    from aair_nb.config import load_split
    from aair_nb.evaluate import encode_dataset, similarities, pair_score_fn, two_way_metrics
    from aair_nb.fusion import rerank
    from aair_nb.metrics import retrieval_metrics
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name) if a.smoke else a.work
    data, flags = train_setup(a.smoke, work, a.steps)
    flags += ['--rerank-k', '0']                                                      # the runs' own evaluation: first stage only
    if a.smoke: a.ks = ['2', 'all']
    log = out/'finegrained_rows.jsonl'
    rows = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() and not a.smoke else []
    have = {(r['stage'], r['model'], str(r['k'])) for r in rows}
    def save(r):
        with open(log, 'a') as f: f.write(json.dumps(r) + '\n')
        rows.append(r)
    loaded = {}
    for name, extra in MODELS.items():
        if name != 'aair' and name not in a.models: continue
        model, tok, cfg = load_run(ensure_run(work/name, flags + extra), device='cpu')
        ds = load_split(cfg.data, 'test')
        t0 = time.perf_counter()
        enc = encode_dataset(model, ds, tok, keep_locals=True, progress=False, cache=_split_cache(model, tok, cfg, ds, 'test', 0, False))
        loaded[name] = (model, enc, ds, time.perf_counter() - t0)
    model, enc, ds, enc_s = loaded['aair']
    first = similarities(model, enc)                                                     # [n_img, n_txt] ITC
    n_q = sum(first.shape)
    if ('first', 'aair', '0') not in have:
        save(dict(stage='first', model='aair', k=0, test={k: float(v) for k, v in retrieval_metrics(first, ds.txt2img).items() if k in KEYS},
                  encode_seconds=enc_s))
    for name, (m, e, _, enc_s) in loaded.items():
        score = pair_score_fn(m, e)                                          # the model's own second-stage score of given pairs
        for k in a.ks:
            if ('second', name, k) in have: print(f"{name} k={k}: done before, skipped", flush=True); continue
            t0 = time.perf_counter()
            if k == 'all' and name == 'aair':                                            # ITM on every pair: estimate from k = 64 first
                per_pair = next((r['seconds'] / r['pairs'] for r in rows if r['model'] == 'aair' and r['stage'] == 'second' and r['k'] != 'all' and r.get('pairs')), None)
                est = per_pair * first.numel() if per_pair else float('inf')
                if est > 60 * a.max_minutes:
                    save(dict(stage='second', model=name, k=k, skipped=True, pairs=int(first.numel()), seconds=est, encode_seconds=enc_s)); continue
            if k == 'all' and name != 'aair':                                            # the run's own test: every pair scored
                t = json.loads((work/name/'metrics.json').read_text())
                m_, pairs, secs = t['itc'], int(first.numel()), t['timings']['rank_s']
            else:
                kk = sum(first.shape) if k == 'all' else int(k)
                s_i2t, s_t2i, pairs = rerank(first, score, kk, 256)
                m_ = two_way_metrics(s_i2t, s_t2i, ds.txt2img)
                secs = time.perf_counter() - t0
            save(dict(stage='second', model=name, k=k, test={x: float(m_[x]) for x in KEYS}, pairs=int(pairs), seconds=secs,
                      ms_per_query=1e3 * secs / n_q, encode_seconds=enc_s))
            print(f"{name} k={k}: rsum {m_['rsum']:.1f}, {secs:.1f} s", flush=True)
    meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), data='smoke shapes' if a.smoke else portable(data),
                steps=a.steps, ks=a.ks, **({'smoke': True} if a.smoke else {}))
    (out/'finegrained.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    (out/'finegrained.md').write_text(md := markdown(rows, meta))
    print(md); print(f"wrote {out/'finegrained.json'} and {out/'finegrained.md'}")
    tmp.cleanup()


if __name__ == '__main__': main()
