"""Does each part of AAIR earn its place? Two studies through the same `aair_train` as the main job, at one fixed budget.

`--study ladder` (default): each component added in turn, every row the same number of optimizer steps and the same
schedule, reported on the test split (and the validation split that picked its checkpoint). `--study zoo`: every
registered model of the package at that same budget, with class mAP / PMRP beside R@K and the evaluation cost. `--study recipe`:
experiments on *how* the auxiliary losses are added (their weights, temperatures, warm-up, where LMIM's locals come
from, which modality each acts on), reported on the validation split only: these pick the recipe, the ladder then tests it.
`--study levers`: one change each to the training recipe of bench_rsicd.py (hard negatives in ITC, word and local
dropout, queue size, learning rate), on the validation split, meant for `--data` RSICD.

Every row is `aair_train` with the registered baseline (`--model vsepp`, `--model itc`) or AAIR's fields set by
`--set model.KEY=VALUE`, for each of `--seeds`. The rows with a fusion encoder also report re-ranking of the top 16.
Data: the generated shapes set (2,000 / 250 / 250 images, `tiny` preset) or, with `--data`, a Karpathy JSON such as
RSICD with the `small` preset on cached features (the recipe of bench_rsicd.py; each row then takes tens of minutes).
Writes bench/results/{ablation,zoo,recipe}[_NAME].json (every run) and .md (mean ± standard deviation over seeds), or the
same files in RESULTS; NAME is the data set's folder name for data other than shapes.

Resumable: each finished run is appended at once to RESULTS/ablation_runs.jsonl, keyed by its flags, seed, steps,
batch size and data set; a run already there is skipped when the script runs again (delete the file to start over).
`--report` trains nothing and rewrites the tables from the kept runs (a row shows how many seeds it has).

    python bench/bench_ablation.py                                 # the ladder: 7 rows x 3 seeds, 780 steps (the main job's)
    python bench/bench_ablation.py --study recipe --seeds 0 1      # the recipe experiments, on val
    python bench/bench_ablation.py --study zoo                     # every registered model, 3 seeds
    python bench/bench_ablation.py --study zoo --report            # its tables from the runs kept so far
    python bench/bench_ablation.py --data ../shared/data/rsicd/dataset_rsicd.json --steps 1500 --seeds 0 1
    python bench/bench_ablation.py --study levers --data ../shared/data/rsicd/dataset_rsicd.json --steps 682 --seeds 0
    python bench/bench_ablation.py --smoke                         # every ladder row, 1 seed, 2 steps at batch 8 on 8/4/4 images
"""
import argparse, json, os, re, statistics, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

from _bench import add_common, results_dir, tiny_shapes, portable

KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum', 'mR']
AAIR = lambda pool, ims, lmim, itm, *more: ['--set', f'model.pool={pool}', f'model.w_ims={ims}', f'model.w_lmim={lmim}', f'model.w_itm={itm}', *more]
CAPTIONS = ['model.ims_views=captions', 'model.lmim_views=captions']   # the recipe study's finding: both on the captions only
LADDER = [  # (row name, aair_train flags); vsepp / itc: align_loss vse / itc, mean pooling, w_ims = w_lmim = w_itm = 0
    ('VSE++ hinge, mean pooling (all negatives for 156 steps)', ['--model', 'vsepp', '--set', 'model.vse_warmup=156']),
    ('ITC, mean pooling', ['--model', 'itc']),
    ('+ IMS on captions', AAIR('mean', 1, 0, 0, 'model.ims_views=captions')),
    ('+ LMIM on captions', AAIR('mean', 1, 0.5, 0, *CAPTIONS)),
    ('GPO instead of mean pooling', AAIR('gpo', 1, 0.5, 0, *CAPTIONS)),
    ('+ ITM = AAIR, ITC ranking', AAIR('gpo', 1, 0.5, 1, *CAPTIONS)),
    ("AAIR, IMS and LMIM on both modalities (as published), ITC ranking", AAIR('gpo', 1, 0.5, 1, 'model.ims_views=both', 'model.lmim_views=both')),
]
RECIPE = [  # experiments on the validation split: each changes one thing of how the losses join (mean pooling, no ITM unless named)
    ('ITC alone', ['--model', 'itc']),
    ('+ IMS', AAIR('mean', 1, 0, 0)),
    ('+ IMS, weight 0.1', AAIR('mean', 0.1, 0, 0)),
    ('+ IMS, own temperatures', AAIR('mean', 1, 0, 0, 'model.aux_temp=own')),
    ('+ IMS, images only', AAIR('mean', 1, 0, 0, 'model.ims_views=images')),
    ('+ IMS, images only, weight 0.1', AAIR('mean', 0.1, 0, 0, 'model.ims_views=images')),
    ('+ IMS, captions only', AAIR('mean', 1, 0, 0, 'model.ims_views=captions')),
    ('+ LMIM 0.5', AAIR('mean', 0, 0.5, 0)),
    ('+ LMIM 0.05', AAIR('mean', 0, 0.05, 0)),
    ('+ LMIM 0.5, online locals', AAIR('mean', 0, 0.5, 0, 'model.lmim_locals=online')),
    ('+ LMIM 0.5, images only', AAIR('mean', 0, 0.5, 0, 'model.lmim_views=images')),
    ('+ LMIM 0.5, captions only', AAIR('mean', 0, 0.5, 0, 'model.lmim_views=captions')),
    ('+ IMS + LMIM 0.5', AAIR('mean', 1, 0.5, 0)),
    ('+ IMS + LMIM 0.5, ramped over 156 steps', AAIR('mean', 1, 0.5, 0, 'model.aux_warmup=156')),
    ('+ IMS 0.1 + LMIM 0.05', AAIR('mean', 0.1, 0.05, 0)),
    ('+ IMS 0.1 + LMIM 0.05, GPO', AAIR('gpo', 0.1, 0.05, 0)),
    ('+ IMS 0.1 + LMIM 0.05, GPO, + ITM', AAIR('gpo', 0.1, 0.05, 1)),
    ('+ IMS captions only + LMIM 0.05', AAIR('mean', 1, 0.05, 0, 'model.ims_views=captions')),
    ('+ IMS captions only + LMIM 0.05, GPO', AAIR('gpo', 1, 0.05, 0, 'model.ims_views=captions')),
    ('+ IMS captions only + LMIM 0.05, GPO, + ITM', AAIR('gpo', 1, 0.05, 1, 'model.ims_views=captions')),
    ('+ IMS + LMIM 0.5, captions only', AAIR('mean', 1, 0.5, 0, 'model.ims_views=captions', 'model.lmim_views=captions')),
    ('+ IMS + LMIM 0.5, captions only, GPO', AAIR('gpo', 1, 0.5, 0, 'model.ims_views=captions', 'model.lmim_views=captions')),
    ('+ IMS + LMIM 0.5, captions only, GPO, + ITM', AAIR('gpo', 1, 0.5, 1, 'model.ims_views=captions', 'model.lmim_views=captions')),
    ('VSE++ hinge (hardest negative)', ['--model', 'vsepp']),
    ('VSE++ hinge, all negatives for 156 steps', ['--model', 'vsepp', '--set', 'model.vse_warmup=156']),
]
ZOO = [  # every registered model, its own defaults, the same budget; a model that re-ranks also gets a re-ranked row
    ('VSE++ (vsepp, all negatives for 156 steps)', ['--model', 'vsepp', '--set', 'model.vse_warmup=156']),
    ('ITC (itc)', ['--model', 'itc']),
    ('AAIR (aair), ITC ranking', ['--model', 'aair']),
    ('PCME (pcme), ranked by the means', ['--model', 'pcme']),
    ('Cross-modal center loss (center)', ['--model', 'center']),
    ('ITC + cross-modal center loss (center, w_itc=1)', ['--model', 'center', '--set', 'model.w_itc=1']),
    ('GCN text path (gcn)', ['--model', 'gcn']),
    ('GPLDAN, plain modality classifier (gpldan)', ['--model', 'gpldan']),
    ('GPLDAN, adversarial modality classifier (gpldan)', ['--model', 'gpldan', '--set', 'model.modality=adversarial']),
    ('TERAN, MrSw alignment of every pair (teran)', ['--model', 'teran']),
    ('IMRAM, text, K = 3, every pair (imram)', ['--model', 'imram', '--set', 'model.mode=text']),
]
# on real data the model that scores every pair through its network picks its checkpoint on 200 validation images, as in
# bench_finegrained.py: all of RSICD's would take about 27 minutes per check
REAL_DATA_ZOO = {'imram': ['--set', 'eval.val_images=200']}
LEVERS = [  # training levers of the RSICD recipe (issue: a better recipe in the same CPU hour), each one change to it, on val
    ('the recipe as it is (lr 3e-4, queue 1,024)', []),
    ('ITC hard negatives (HN-NCE, beta 0.5)', ['--set', 'model.itc_hard=0.5']),
    ('word dropout 0.1 (cached token states)', ['--set', 'model.text_drop=0.1']),
    ('image local dropout 0.2', ['--set', 'model.image_drop=0.2']),
    ('queue 4,096', ['--set', 'model.queue_size=4096']),
    ('learning rate 6e-4', ['--lr', '6e-4']),
    ('learning rate 1.5e-4', ['--lr', '1.5e-4']),
]
STUDIES = dict(ladder=LADDER, recipe=RECIPE, zoo=ZOO, levers=LEVERS)
NAMES = dict(ladder='ablation', recipe='recipe', zoo='zoo', levers='levers')   # result file names
CLASS_KEYS = ['i2t_map', 't2i_map', 'i2t_pmrp', 't2i_pmrp']
SMOKE = dict(steps=2, seeds=[0], batch_size=8)


def run_row(flags:list, steps:int, seed:int, out:Path, batch_size:int=64, data:str|None=None, extra:list=()) -> dict:
    "One `aair_train` run into `out` (on the shapes set, or the Karpathy JSON `data`); its metrics.json and best validation."
    from aair_nb.cli import run_train
    m = run_train(['--out', str(out), '--overwrite', '--max-steps', str(steps), '--epochs', '100', '--seed', str(seed), '--batch-size', str(batch_size),
                   '--quiet'] + (['--data', str(data)] if data else []) + list(extra) + flags)
    return dict(m, val=best_val(json.loads((out/'history.json').read_text())))


def best_val(history:dict, key:str='rsum') -> dict:
    "The validation metrics of the evaluation that picked the `best` checkpoint (the highest `key`)."
    i = max(range(len(history['val_step'])), key=lambda j: history[f'val_{key}'][j])
    return {k: history[f'val_{k}'][i] for k in KEYS} | dict(step=history['val_step'][i])


def _stats(rs:list, key:str, keys:list=KEYS) -> dict:
    vals = {k: [r[key][k] for r in rs] for k in keys}
    return dict(mean={k: statistics.mean(v) for k, v in vals.items()}, std={k: statistics.stdev(v) if len(v) > 1 else 0. for k, v in vals.items()})


def rerank_label(name:str) -> str:
    "The name of a row's re-ranked twin: '..., ITC ranking' -> '..., re-ranked top-16', else the name + ', re-ranked top-16'."
    return name.replace('ITC ranking', 're-ranked top-16') if 'ITC ranking' in name else re.sub(r', ranked by .*$', '', name) + ', re-ranked top-16'


def summarise(runs:list, rows:list) -> list:
    "Mean and standard deviation over seeds of each row's test and validation metrics (class metrics and costs where the runs have them); rows whose runs re-ranked get a re-ranked twin."
    out = []
    for name, _ in rows:
        rs = [r for r in runs if r['row'] == name]
        for label, key in [(name, 'itc')] + ([(rerank_label(name), 'rerank')] if all('rerank' in r for r in rs) else []):
            row = dict(row=label, seeds=len(rs), test=_stats(rs, key), val=_stats(rs, 'val') if key == 'itc' else None)
            if all(r.get('class') for r in rs) and key == 'itc': row['class'] = _stats(rs, 'class', CLASS_KEYS)   # by the first stage
            if all('timings' in r for r in rs):
                t = [r['timings'] for r in rs]
                row['cost'] = dict(train_minutes=statistics.mean(r['train_seconds'] for r in rs) / 60,
                                   eval_seconds=statistics.mean(x['encode_s'] + x['rank_s'] + (x.get('rerank_s', 0) if key == 'rerank' else 0) for x in t))
            out.append(row)
    return out


def _cell(s:dict|None, k:str, n:int) -> str:
    "mean ± sd over `n` seeds (the mean alone for one seed)."
    return '' if s is None else f"{s['mean'][k]:.1f}" + (f" ± {s['std'][k]:.1f}" if n > 1 else '')


def markdown(rows:list, meta:dict) -> str:
    "The study's table: the ladder by its test recalls (and val), the recipe experiments by their validation recalls."
    on_val = meta['study'] in ('recipe', 'levers')
    keys = [k for k in KEYS if k != ('mR' if meta['data'] == 'shapes' else 'rsum')]
    head = (f"{meta['data_label']}, {meta['steps']} steps at batch {meta['batch_size']} per run, seeds {meta['seeds']}; mean ± standard "
            f"deviation over seeds, {'validation split' if on_val else 'test split (last column: validation, which picked the checkpoint)'}. "
            + (f"Written {meta['date']} from the kept runs (`--report`), {meta['train_minutes']:.0f} minutes of training in all on {meta['cpus']} CPU cores."
               if meta.get('report') else f"Measured {meta['date']}, {meta['train_minutes']:.0f} minutes of training on {meta['cpus']} CPU cores."))
    zoo = meta['study'] == 'zoo'
    more = (['class mAP i2t', 'class mAP t2i', 'PMRP i2t', 'PMRP t2i', 'train min', 'eval s'] if zoo else [])
    if zoo: head += " Class metrics (same class = relevant, first stage) and costs (training minutes; encoding + ranking (+ re-ranking) seconds of the test split) are means over seeds."
    lines = [head, '', '| row | seeds | ' + ' | '.join(k.replace('_r', ' R@') for k in keys) + (' |' if on_val else f' | val {keys[-1]} |')
             + ''.join(f' {m} |' for m in more), '|---|---:|' + '---:|' * (len(keys) + (not on_val) + len(more))]
    for r in rows:
        if on_val and r['val'] is None: continue                   # a re-ranked twin: validation ranks by ITC only
        s = r['val'] if on_val else r['test']
        n = r['seeds']
        extra = ''
        if zoo:
            c, cost = r.get('class'), r.get('cost')
            extra = ''.join(f" {c['mean'][k]:.1f} |" if c else ' |' for k in CLASS_KEYS)
            extra += f" {cost['train_minutes']:.1f} | {cost['eval_seconds']:.1f} |" if cost else ' | |'
        lines.append(f"| {r['row']} | {n} | " + ' | '.join(_cell(s, k, n) for k in keys) + (' |' if on_val else f" | {_cell(r['val'], keys[-1], n)} |") + extra)
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--study', choices=list(STUDIES), default='ladder', help="which rows: the component ladder (test), every registered model (test), the recipe experiments (val) or the RSICD recipe levers (val)")
    p.add_argument('--steps', type=int, default=780, help="optimizer steps per run (780: the main job's 5 epochs of shapes at batch 64)")
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--rows', type=int, nargs='*', default=None, help="indices into the study's rows (default: all)")
    p.add_argument('--batch-size', type=int, default=64, help="pairs per step")
    p.add_argument('--keep', type=Path, default=None, help="keep each run's folder (checkpoints, history) under this folder (default: deleted)")
    p.add_argument('--data', default=None, help="Karpathy JSON, trained with the `small` preset on cached features (default: the generated shapes set)")
    p.add_argument('--report', action='store_true', help="train nothing: write the tables from the runs kept in ablation_runs.jsonl (a row's missing seeds are left out and its seed count says so)")
    a = add_common(p).parse_args()
    if a.smoke: vars(a).update(SMOKE)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    out = results_dir(a, 'bench_ablation')
    t0, runs, rows = time.time(), [], STUDIES[a.study]
    chosen = [rows[i] for i in a.rows] if a.rows else rows
    name = NAMES[a.study] + ('_' + Path(a.data).resolve().parent.name if a.data and not a.smoke else '')
    log = out/'ablation_runs.jsonl'                                # one finished run per line, written at once
    done = {json.dumps(r['key']): r for r in map(json.loads, log.read_text().splitlines())} if log.exists() else {}
    with tempfile.TemporaryDirectory() as work:
        if a.smoke and not a.data: a.data = str(tiny_shapes(Path(work)/'shapes'))
        data = 'shapes' if a.data is None else 'smoke shapes' if a.smoke else portable(a.data)
        extra = [] if a.data is None or a.smoke else real_data_flags()
        if a.study == 'zoo' and a.data and not a.smoke: extra += ['--set', 'data.classes=filename']   # RSICD's scene classes (airport_12.jpg)
        if a.study == 'levers' and a.data and not a.smoke: extra += ['--rerank-k', '0']   # its table is validation (ITC): no test re-ranking (6 min a run)
        for seed in a.seeds:                                       # every row of one seed first: a stopped study has whole seeds
            for i, (row, flags) in enumerate(chosen):
                if a.study == 'zoo' and a.data and not a.smoke: flags = flags + REAL_DATA_ZOO.get(flags[1], [])
                key = dict(flags=extra + flags, seed=seed, steps=a.steps, batch_size=a.batch_size, data=data)
                if a.study == 'zoo': key['study'] = 'zoo'          # its runs keep class metrics and costs: the ladder's same-flag runs do not
                if json.dumps(key) in done:
                    runs.append({**done[json.dumps(key)], 'row': row}); print(f"{row} seed {seed}: done before, skipped", flush=True); continue
                if a.report: print(f"{row} seed {seed}: not run, left out", flush=True); continue
                m = run_row(flags, a.steps, seed, (a.keep or Path(work))/f'row{i}_seed{seed}', a.batch_size, a.data, extra)
                r = dict(row=row, flags=extra + flags, seed=seed, itc=m['itc'], val=m['val'], train_seconds=m['train_seconds'],
                         **{k: m[k] for k in ('rerank', 'class', 'timings') if k in m}, key=key)
                with open(log, 'a') as f: f.write(json.dumps(r) + '\n')
                runs.append(r)
                write(out, name, runs, chosen, a, data, t0)                # the tables so far: a stopped study still leaves them
                print(f"{row} seed {seed}: val rsum {m['val']['rsum']:.1f}, test rsum {m['itc']['rsum']:.1f}"
                      + (f", re-ranked {m['rerank']['rsum']:.1f}" if 'rerank' in m else '') + f" ({m['train_seconds']:.0f} s)", flush=True)
    if a.report and not runs: raise SystemExit(f"--report: no kept run in {log} matches these rows, seeds, --steps, --batch-size and --data; the tables are left as they were")
    print(write(out, name, runs, chosen, a, data, t0))
    print(f"wrote {out/name}.json and {out/name}.md")


def write(out:Path, name:str, runs:list, chosen:list, a, data:str, t0:float) -> str:
    "Write NAME.json (every run, the summary) and NAME.md (the table) for the rows that have runs; the table."
    chosen = [(n, f) for n, f in chosen if any(r['row'] == n for r in runs)]
    meta = dict(study=a.study, date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), steps=a.steps, seeds=a.seeds,
                batch_size=a.batch_size, minutes=(time.time() - t0) / 60, train_minutes=sum(r['train_seconds'] for r in runs) / 60, data=data,
                data_label=('Shapes (250 val / 250 test images, 5 captions each), `tiny` preset' if a.data is None else
                            f"{data}, `small` preset on cached features" if not a.smoke else 'smoke shapes'),
                **({'smoke': True} if a.smoke else {}), **({'report': True} if a.report else {}))
    summary = summarise(runs, chosen)
    (out/f'{name}.json').write_text(json.dumps(dict(meta=meta, rows=summary, runs=runs), indent=2))
    (out/f'{name}.md').write_text(md := markdown(summary, meta))
    return md


def real_data_flags() -> list:
    "The `small` preset on cached features, as bench_rsicd.py trains it (without its re-ranking depth: the rows set it)."
    from bench_rsicd import FLAGS
    return list(FLAGS['small'])


if __name__ == '__main__': main()
