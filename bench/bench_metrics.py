"""Ranking speed of `aair_nb.metrics.retrieval_ranks` (vectorised) against the per-query loop of nbs/03_metrics.ipynb
on a random COCO-5K-sized similarity matrix (5,000 images x 25,000 captions, 5 per image, float32), next to one plain
pass over the matrix (`sims.max(1)`). Medians over repeats; peak extra memory of one call, measured in a fresh
process. Writes bench/results/metrics.json (or RESULTS/metrics.json).

    python bench/bench_metrics.py                          # 5000 x 25000, 5 repeats, loop on 20% of the queries
    python bench/bench_metrics.py --n_img 1000 --repeats 3 --loop_frac 1
    python bench/bench_metrics.py --smoke                  # 50 x 250, once, every query; into a temporary folder
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from aair_nb.metrics import retrieval_ranks
from _bench import add_common, results_dir

NB = Path(__file__).resolve().parents[1]/'nbs'/'03_metrics.ipynb'
SMOKE = dict(n_img=50, per=5, repeats=1, loop_frac=1.0)


def load_loop(nb:Path=NB) -> dict:
    "The per-query functions of the notebook (`i2t_rank_loop`, `t2i_rank_loop`, `ranks_loop`), run from the cell that defines them."
    cells = [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
    src = [c for c in cells if 'def ranks_loop(' in c]
    if len(src) != 1: raise RuntimeError(f"{nb}: expected one code cell defining ranks_loop, found {len(src)}")
    ns = {'np': np}
    exec(src[0], ns)
    return ns


def make(n_img:int, per:int, seed:int=0) -> tuple[np.ndarray, np.ndarray]:
    "Random float32 similarities [n_img, n_img * per] and each caption's image index (captions grouped by image)."
    sims = np.random.default_rng(seed).random((n_img, n_img * per), dtype=np.float32)   # no float64 temporary
    return sims, np.repeat(np.arange(n_img), per)


def median_time(f, repeats:int) -> tuple[float, list]:
    "Median wall time of `repeats` calls after one warm-up call, and all the times."
    f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def loop_parts(fns:dict, sims:np.ndarray, txt2img:np.ndarray, frac:float):
    """The loop's i2t queries for the first `frac` of the images and its t2i queries for the first `frac` of the captions
    (contiguous blocks, walked as the full loop walks them): two functions, and the two query counts."""
    n_img, n_txt = sims.shape
    ni, nt = max(1, round(frac * n_img)), max(1, round(frac * n_txt))
    i2t = lambda: [fns['i2t_rank_loop'](sims, txt2img, i) for i in range(ni)]
    t2i = lambda: [fns['t2i_rank_loop'](sims, txt2img, j) for j in range(nt)]
    return i2t, t2i, ni, nt


def peak_extra_mb(method:str, a) -> float:
    "Peak RSS growth (MB) of one call of `method`, in a fresh process that has already built the matrix."
    cmd = [sys.executable, __file__, '--_mem', method, '--n_img', str(a.n_img), '--per', str(a.per), '--loop_frac', str(a.loop_frac)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _mem_child(method:str, a):
    "Build the matrix, read the RSS, run `method` once, print (peak RSS - that RSS) in MB."
    import psutil
    sims, txt2img = make(a.n_img, a.per)
    f = dict(max_pass=lambda: sims.max(1), vectorised=lambda: retrieval_ranks(sims, txt2img),
             loop=lambda: [f() for f in loop_parts(load_loop(), sims, txt2img, a.loop_frac)[:2]])[method]
    base = psutil.Process().memory_info().rss
    f()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024                   # Linux reports KiB
    print(round(max(0, peak - base) / 2**20, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n_img', type=int, default=5000); ap.add_argument('--per', type=int, default=5, help='captions per image')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--loop_frac', type=float, default=0.2, help='share of the queries the loop is timed on (then extrapolated)')
    ap.add_argument('--out', type=Path, default=None, help="result file (default: RESULTS/metrics.json)")
    ap.add_argument('--_mem', default=None, help=argparse.SUPPRESS)
    a = add_common(ap).parse_args(argv)
    if a._mem: return _mem_child(a._mem, a)
    if a.smoke:
        if a.out: ap.error("--out cannot be combined with --smoke (give --results DIR)")
        vars(a).update(SMOKE)
    out = a.out or results_dir(a, 'bench_metrics')/'metrics.json'

    sims, txt2img = make(a.n_img, a.per)
    n_img, n_txt = sims.shape
    fns = load_loop()
    want = retrieval_ranks(sims, txt2img)
    i2t, t2i, ni, nt = loop_parts(fns, sims, txt2img, a.loop_frac)
    if not (np.array_equal(i2t(), want[0][:ni]) and np.array_equal(t2i(), want[1][:nt])):
        raise AssertionError("the notebook's loop and retrieval_ranks disagree")

    t_max, ts_max = median_time(lambda: sims.max(1), a.repeats)
    t_vec, ts_vec = median_time(lambda: retrieval_ranks(sims, txt2img), a.repeats)
    t_i2t, ts_i2t = median_time(i2t, a.repeats)
    t_t2i, ts_t2i = median_time(t2i, a.repeats)
    t_loop = t_i2t * n_img / ni + t_t2i * n_txt / nt          # each direction scaled by its own number of queries
    mem = {m: peak_extra_mb(m, a) for m in ('max_pass', 'vectorised', 'loop')}

    loop_note = 'measured on all queries' if ni == n_img and nt == n_txt else \
        f'extrapolated from the first {ni:,} image and {nt:,} caption queries ({a.loop_frac:.0%})'
    rows = [('one pass: sims.max(1)', t_max, mem['max_pass']),
            ('retrieval_ranks (vectorised)', t_vec, mem['vectorised']),
            ('per-query loop (notebook)' + ('' if ni == n_img and nt == n_txt else ' *'), t_loop, mem['loop'])]
    w = max(len(r[0]) for r in rows)
    table = '\n'.join([f"| {'method'.ljust(w)} | median s | x one pass | peak extra MB |",
                       f"|{'-' * (w + 2)}|---------:|-----------:|--------------:|"] +
                      [f"| {n.ljust(w)} | {t:8.4f} | {t / t_max:10.1f} | {m:13.1f} |" for n, t, m in rows] +
                      [f"loop / vectorised: {t_loop / t_vec:,.0f}x" + ('' if ni == n_img and nt == n_txt else f"; * {loop_note}")])
    print(f"{n_img:,} x {n_txt:,} float32 ({a.per} captions per image), median of {a.repeats} repeats\n{table}", flush=True)

    import psutil
    res = dict(benchmark='metrics', what='0-based i2t + t2i ranks of a random similarity matrix; pessimistic ties',
               shape=[n_img, n_txt], dtype='float32', captions_per_image=a.per, repeats=a.repeats,
               max_pass_s=round(t_max, 4), vectorised_s=round(t_vec, 4), loop_s=round(t_loop, 3),
               loop_over_vectorised=round(t_loop / t_vec, 1), vectorised_over_max_pass=round(t_vec / t_max, 2),
               loop_note=loop_note, loop_i2t_subset_s=round(t_i2t, 4), loop_t2i_subset_s=round(t_t2i, 4),
               peak_extra_mb=mem, memory_note=f'peak RSS growth of one call in a fresh process that already holds the matrix; '
                                          f'max_pass allocates only its {4 * n_img / 1024:.0f} KiB result, so its value is the floor of this measurement',
               seconds=dict(max_pass=[round(t, 4) for t in ts_max], vectorised=[round(t, 4) for t in ts_vec],
                            loop_i2t_subset=[round(t, 4) for t in ts_i2t], loop_t2i_subset=[round(t, 4) for t in ts_t2i]),
               table=table,
               machine=f"{platform.machine()}, {os.cpu_count()} CPU threads visible, "
                       f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}",
               versions=dict(numpy=np.__version__),
               date=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), **({'smoke': True} if a.smoke else {}))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.json.tmp'); tmp.write_text(json.dumps(res, indent=2) + '\n'); os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == '__main__': sys.exit(main())
