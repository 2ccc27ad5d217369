"""The ablation ladder on the generated shapes set: each component of AAIR added in turn, at one fixed step budget.

Every row is `aair_train` (the same trainer, evaluator and data as the main job) with loss weights and pooling set
by flags, trained for `--steps` optimizer steps at batch 64 and tested on the shapes test split (250 images,
1,250 captions), for each of `--seeds`. The last row also reports the fusion re-ranking of the top 16. Writes
bench/results/ablation.json (every run) and bench/results/ablation.md (mean and standard deviation over seeds).

    python bench/bench_ablation.py                        # 6 rows x 3 seeds
    python bench/bench_ablation.py --steps 200 --seeds 0  # a quick look
"""
import argparse, json, os, statistics, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parent/'results'
KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum']
OFF = ['--w-ims', '0', '--w-lmim', '0', '--w-itm', '0']
LADDER = [  # (row name, aair_train flags)
    ('VSE++ hinge, mean pooling', ['--loss', 'vse', '--pool', 'mean'] + OFF),
    ('ITC, mean pooling', ['--loss', 'itc', '--pool', 'mean'] + OFF),
    ('ITC + IMS, mean pooling', ['--pool', 'mean', '--w-ims', '1', '--w-lmim', '0', '--w-itm', '0']),
    ('ITC + IMS + LMIM, mean pooling', ['--pool', 'mean', '--w-ims', '1', '--w-lmim', '0.5', '--w-itm', '0']),
    ('ITC + IMS + LMIM, GPO', ['--pool', 'gpo', '--w-ims', '1', '--w-lmim', '0.5', '--w-itm', '0']),
    ('AAIR: + ITM (ITC ranking)', ['--pool', 'gpo', '--w-ims', '1', '--w-lmim', '0.5', '--w-itm', '1']),
]


def run_row(flags:list, steps:int, seed:int, out:Path) -> dict:
    "One `aair_train` run into `out`; its metrics.json."
    from aair_nb.cli import run_train
    return run_train(['--out', str(out), '--max-steps', str(steps), '--epochs', '100', '--seed', str(seed), '--quiet'] + flags)


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
    lines = [f"Shapes test split (250 images, 1,250 captions), `tiny` preset, {meta['steps']} steps at batch 64 per run, "
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
    a = p.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    t0, runs = time.time(), []
    ladder = [LADDER[i] for i in a.rows] if a.rows else LADDER
    with tempfile.TemporaryDirectory() as work:
        for i, (name, flags) in enumerate(ladder):
            for seed in a.seeds:
                m = run_row(flags, a.steps, seed, Path(work)/f'row{i}_seed{seed}')
                runs.append(dict(row=name, flags=flags, seed=seed, itc=m['itc'], train_seconds=m['train_seconds'],
                                 **({'rerank': m['rerank']} if 'rerank' in m else {})))
                print(f"{name} seed {seed}: rsum {m['itc']['rsum']:.1f}" + (f", re-ranked {m['rerank']['rsum']:.1f}" if 'rerank' in m else '')
                      + f" ({m['train_seconds']:.0f} s)", flush=True)
    meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), steps=a.steps, seeds=a.seeds,
                batch_size=64, minutes=(time.time() - t0) / 60)
    rows = summarise(runs)
    OUT.mkdir(exist_ok=True)
    (OUT/'ablation.json').write_text(json.dumps(dict(meta=meta, rows=rows, runs=runs), indent=2))
    (OUT/'ablation.md').write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == '__main__': main()
