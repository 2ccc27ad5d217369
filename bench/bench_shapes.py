"""Generation speed of the shapes data set: images per second of `make_shapes` (PNG files and the JSON written),
median over repeats, at each image size. Writes bench/results/shapes_gen.json (or RESULTS/shapes_gen.json).

    python bench/bench_shapes.py                 # 2000/250/250 images at 64 and 128 px, 5 repeats
    python bench/bench_shapes.py --sizes 64 --repeats 3
    python bench/bench_shapes.py --smoke         # 8/4/4 images at 32 px, once, into a temporary folder
"""
import argparse, json, os, platform, statistics, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np, PIL
from aair_nb.shapes import make_shapes
from _bench import add_common, results_dir

SMOKE = dict(n_train=8, n_val=4, n_test=4, sizes=[32], repeats=1)


def bench(n_train:int, n_val:int, n_test:int, size:int, repeats:int) -> dict:
    "Time `repeats` fresh generations into temporary folders; median and all times."
    secs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            make_shapes(d, n_train, n_val, n_test, size=size, seed=0)
            secs.append(time.perf_counter() - t0)
    n, med = n_train + n_val + n_test, statistics.median(secs)
    return dict(size=size, images=n, repeats=repeats, seconds=[round(s, 4) for s in secs], median_s=round(med, 4),
                images_per_s=round(n / med, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n_train', type=int, default=2000); ap.add_argument('--n_val', type=int, default=250)
    ap.add_argument('--n_test', type=int, default=250); ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--out', type=Path, default=None, help="result file (default: RESULTS/shapes_gen.json)")
    a = add_common(ap).parse_args(argv)
    if a.smoke:
        if a.out: ap.error("--out cannot be combined with --smoke (give --results DIR)")
        vars(a).update(SMOKE)
    out = a.out or results_dir(a, 'bench_shapes')/'shapes_gen.json'
    rows = []
    for size in a.sizes:
        rows.append(bench(a.n_train, a.n_val, a.n_test, size, a.repeats))
        print(f"{size:4d} px: {rows[-1]['images_per_s']:,.0f} images/s (median of {a.repeats} x {rows[-1]['images']} images)", flush=True)
    res = dict(benchmark='shapes_gen', what='make_shapes: render + 5 captions + PNG write per image, JSON at the end; single process',
               images_per_s=rows[0]['images_per_s'], by_size=rows,
               machine=f"{platform.machine()}, {os.cpu_count()} CPU threads visible, Python {platform.python_version()}",
               versions=dict(numpy=np.__version__, pillow=PIL.__version__),
               date=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), **({'smoke': True} if a.smoke else {}))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.json.tmp'); tmp.write_text(json.dumps(res, indent=2) + '\n'); os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == '__main__': sys.exit(main())
