"""The ablation ladder on the generated shapes set: each component of AAIR added in turn, at one fixed step budget.

Every row is `aair_train` (the same trainer, evaluator and data as the main job) with the registered baseline
(`--model vsepp`, `--model itc`) or AAIR's loss weights and pooling set by `--set model.KEY=VALUE`, trained for
`--steps` optimizer steps at batch 64 and tested on the shapes test split (250 images, 1,250 captions), for each of
`--seeds`. The last row also reports the fusion re-ranking of the top 16. Writes bench/results/ablation.json (every
run) and bench/results/ablation.md (mean and standard deviation over seeds), or the same files in RESULTS.

Resumable: each finished run is appended at once to RESULTS/ablation_runs.jsonl, keyed by its flags, seed, steps,
batch size and data set; a run already there is skipped when the script runs again (delete the file to start over).

    python bench/bench_ablation.py                        # 6 rows x 3 seeds
    python bench/bench_ablation.py --steps 200 --seeds 0  # a quick look
    python bench/bench_ablation.py --smoke                # 6 rows x 1 seed, 2 steps at batch 8 on 8/4/4 images; temporary folder
"""
import argparse, json, os, statistics, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

from _bench import add_common, results_dir, tiny_shapes, portable

KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum']
AAIR = lambda pool, ims, lmim, itm: ['--set', f'model.pool={pool}', f'model.w_ims={ims}', f'model.w_lmim={lmim}', f'model.w_itm={itm}']
LADDER = [  # (row name, aair_train flags); vsepp / itc: align_loss vse / itc, mean pooling, w_ims = w_lmim = w_itm = 0
    ('VSE++ hinge, mean pooling', ['--model', 'vsepp']),
    ('ITC, mean pooling', ['--model', 'itc']),
    ('ITC + IMS, mean pooling', AAIR('mean', 1, 0, 0)),
    ('ITC + IMS + LMIM, mean pooling', AAIR('mean', 1, 0.5, 0)),
    ('ITC + IMS + LMIM, GPO', AAIR('gpo', 1, 0.5, 0)),
    ('AAIR: + ITM (ITC ranking)', AAIR('gpo', 1, 0.5, 1)),
]
SMOKE = dict(steps=2, seeds=[0], batch_size=8)


def run_row(flags:list, steps:int, seed:int, out:Path, batch_size:int=64, data:str|None=None) -> dict:
    "One `aair_train` run into `out` (on the shapes set, or the Karpathy JSON `data`); its metrics.json."
    from aair_nb.cli import run_train
    return run_train(['--out', str(out), '--overwrite', '--max-steps', str(steps), '--epochs', '100', '--seed', str(seed), '--batch-size', str(batch_size),
                      '--quiet'] + (['--data', str(data)] if data else []) + flags)


def summarise(runs:list) -> list:
    "Mean and standard deviation over seeds of each row (the AAIR row twice: ITC ranking and re-ranked)."
    rows = []
    for name, _ in LADDER:
        rs = [r for r in runs if r['row'] == name]
        for label, key in [(name, 'itc')] + ([('AAIR: + ITM re-rank top-16', 'rerank')] if 'rerank' in rs[0] else []):
            vals = {k: [r[key][k] for r in rs] for k in KEYS}
            rows.append(dict(row=label, seeds=len(rs), mean={k: statistics.mean(v) for k, v in vals.items()},
                             std={k: statistics.stdev(v) if len(v) > 1 else 0. for k, v in vals.items()}))
    return rows


def markdown(rows:list, meta:dict) -> str:
    lines = [f"Shapes test split (250 images, 1,250 captions), `tiny` preset, {meta['steps']} steps at batch {meta['batch_size']} per run, "
             f"seeds {meta['seeds']}; mean ± standard deviation over seeds. Measured {meta['date']}, "
             f"{meta['minutes']:.0f} minutes in all on {meta['cpus']} CPU cores.", '',
             '| row | ' + ' | '.join(k.replace('_r', ' R@') for k in KEYS) + ' |', '|---|' + '---:|' * len(KEYS)]
    for r in rows:
        lines.append(f"| {r['row']} | " + ' | '.join(f"{r['mean'][k]:.1f} ± {r['std'][k]:.1f}" for k in KEYS) + ' |')
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=600, help="optimizer steps per run (batch 64)")
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--rows', type=int, nargs='*', default=None, help="indices into the ladder (default: all)")
    p.add_argument('--batch-size', type=int, default=64, help="pairs per step")
    p.add_argument('--data', default=None, help="Karpathy JSON (default: the generated shapes set, 2000/250/250 images)")
    a = add_common(p).parse_args()
    if a.smoke: vars(a).update(SMOKE)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    out = results_dir(a, 'bench_ablation')
    t0, runs = time.time(), []
    ladder = [LADDER[i] for i in a.rows] if a.rows else LADDER
    log = out/'ablation_runs.jsonl'                                # one finished run per line, written at once
    done = {json.dumps(r['key']): r for r in map(json.loads, log.read_text().splitlines())} if log.exists() else {}
    with tempfile.TemporaryDirectory() as work:
        if a.smoke and not a.data: a.data = str(tiny_shapes(Path(work)/'shapes'))
        data = 'shapes' if a.data is None else 'smoke shapes' if a.smoke else portable(a.data)
        for i, (name, flags) in enumerate(ladder):
            for seed in a.seeds:
                key = dict(flags=flags, seed=seed, steps=a.steps, batch_size=a.batch_size, data=data)
                if json.dumps(key) in done:
                    runs.append({**done[json.dumps(key)], 'row': name}); print(f"{name} seed {seed}: done before, skipped", flush=True); continue
                m = run_row(flags, a.steps, seed, Path(work)/f'row{i}_seed{seed}', a.batch_size, a.data)
                r = dict(row=name, flags=flags, seed=seed, itc=m['itc'], train_seconds=m['train_seconds'],
                         **({'rerank': m['rerank']} if 'rerank' in m else {}), key=key)
                with open(log, 'a') as f: f.write(json.dumps(r) + '\n')
                runs.append(r)
                print(f"{name} seed {seed}: rsum {m['itc']['rsum']:.1f}" + (f", re-ranked {m['rerank']['rsum']:.1f}" if 'rerank' in m else '')
                      + f" ({m['train_seconds']:.0f} s)", flush=True)
    meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), steps=a.steps, seeds=a.seeds,
                batch_size=a.batch_size, minutes=(time.time() - t0) / 60, train_minutes=sum(r['train_seconds'] for r in runs) / 60,
                **({'smoke': True} if a.smoke else {}), **({'data': data} if a.data else {}))
    rows = summarise(runs)
    (out/'ablation.json').write_text(json.dumps(dict(meta=meta, rows=rows, runs=runs), indent=2))
    (out/'ablation.md').write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    print(f"wrote {out/'ablation.json'} and {out/'ablation.md'}")


if __name__ == '__main__': main()
