"""Exact and approximate search at 10K, 100K and 1M vectors, and the search service's latency under concurrent clients.

Part 1 (index): clustered synthetic unit vectors (`aair_nb.index.clustered`, d = 256 by default) indexed flat (exact),
HNSW and IVF-PQ with the library's defaults (`IndexParams`); per row: build seconds, index bytes (serialised), query
latency (one query at a time, median and p99 over --queries queries, one thread) and recall@10 against exact search.
Part 2 (served): the `aair_serve` application on loopback (uvicorn in a thread) over an index of the shapes test
split of a short run; --requests text queries per client for 1, 4 and 16 concurrent clients: latency p50 / p99 and
throughput. Every finished row is appended to bench/results/index_rows.jsonl at once and skipped when the script runs
again (resumable); bench/results/index.{json,md} are rewritten after each row.

    python bench/bench_index.py                            # 10K, 100K, 1M; then 1, 4, 16 clients
    python bench/bench_index.py --sizes 10000 100000       # fewer sizes
    python bench/bench_index.py --smoke                    # 2,000 vectors of width 32, 1 and 2 clients; temporary folders only
"""
import argparse, json, os, statistics, tempfile, threading, time, urllib.parse, urllib.request
from datetime import datetime, timezone
from pathlib import Path

from _bench import add_common, results_dir, tiny_shapes

KINDS = ['flat', 'hnsw', 'ivfpq']
SMOKE = dict(sizes=[2000], dim=32, queries=50, clients=[1, 2], requests=8, steps=2)


def pct(xs:list, q:float) -> float:
    "The q-quantile (0-1) of xs, nearest rank."
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def index_row(kind:str, n:int, d:int, n_queries:int) -> dict:
    "Build one index of n clustered vectors, time single queries, and compare its top 10 with exact search."
    import faiss, numpy as np
    from aair_nb.index import IndexParams, make_index, search, clustered, recall_at
    faiss.omp_set_num_threads(1)
    x = clustered(n + n_queries, d, n_clusters=max(100, n // 200))
    xb, xq = x[:n], x[n:]
    faiss.omp_set_num_threads(os.cpu_count())                       # building may use every core
    t0 = time.perf_counter(); index = make_index(xb, IndexParams(kind=kind)); build_s = time.perf_counter() - t0
    p = IndexParams(kind=kind).resolve(n, d)
    faiss.omp_set_num_threads(1)                                    # queries: one thread, one at a time, as a request would
    lat = []
    for i in range(n_queries):
        t0 = time.perf_counter(); search(index, xq[i:i + 1], 10); lat.append(1e3 * (time.perf_counter() - t0))
    _, ids = search(index, xq, 10)
    _, true = search(make_index(xb, IndexParams(kind='flat')), xq, 10) if kind != 'flat' else (None, ids)
    return dict(part='index', kind=kind, n=n, d=d, build_s=build_s, bytes=int(faiss.serialize_index(index).size), ms_p50=pct(lat, .5),
                ms_p99=pct(lat, .99), recall10=recall_at(ids, true), params=p.to_dict())


def served_rows(clients:list, requests:int, steps:int, smoke:bool, work:Path, done:set) -> list:
    "Text-query latency and throughput of the service for each number of concurrent clients."
    from concurrent.futures import ThreadPoolExecutor
    from aair_nb.cli import run_train
    from aair_nb.index import build_index, Searcher
    from aair_nb.serve import make_app, BackgroundServer
    todo = [c for c in clients if ('served', c) not in done]
    if not todo: return []
    data = tiny_shapes(work/'shapes') if smoke else None
    run_train(['--out', str(work/'run'), '--max-steps', str(steps), '--batch-size', '8' if smoke else '64', '--rerank-k', '0', '--quiet']
              + (['--data', str(data)] if data else []))
    searcher = Searcher(build_index(work/'run', work/'index', progress=False))
    queries = [searcher.index.store.get('captions', [i])[0]['text'] for i in range(min(50, searcher.index.info['collections']['captions']['n']))]
    rows = []
    with BackgroundServer(make_app(searcher)) as url:
        for c in todo:
            lat, lock = [], threading.Lock()
            def client(j):
                for r in range(requests):
                    q = urllib.parse.quote(queries[(j * requests + r) % len(queries)])
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(f"{url}/api/search/text?q={q}&k=10", timeout=120) as resp: assert resp.status == 200
                    with lock: lat.append(1e3 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            with ThreadPoolExecutor(c) as pool: list(pool.map(client, range(c)))
            wall = time.perf_counter() - t0
            rows.append(dict(part='served', clients=c, requests=len(lat), ms_p50=pct(lat, .5), ms_p99=pct(lat, .99), per_s=len(lat) / wall,
                             index_items=len(searcher.index), model=searcher.index.info['model_name']))
    return rows


def markdown(rows:list, meta:dict) -> str:
    out = [f"Index benchmark ({meta['date']}, {meta['cpus']} CPU cores; clustered unit vectors, d = {meta['dim']}; queries one at a time on one thread; recall@10 against exact search):", '',
           '| vectors | index | build s | size MB | ms/query p50 | p99 | recall@10 |', '|---:|---|---:|---:|---:|---:|---:|']
    for r in sorted((r for r in rows if r['part'] == 'index'), key=lambda r: (r['n'], KINDS.index(r['kind']))):
        out.append(f"| {r['n']:,} | {r['kind']} | {r['build_s']:.1f} | {r['bytes'] / 2**20:.1f} | {r['ms_p50']:.2f} | {r['ms_p99']:.2f} | {r['recall10']:.3f} |")
    served = [r for r in rows if r['part'] == 'served']
    if served:
        out += ['', f"Served (`aair_serve` on loopback, text queries, k = 10, {served[0]['index_items']:,} indexed items, model `{served[0]['model']}`):", '',
                '| clients | requests | ms p50 | ms p99 | requests/s |', '|---:|---:|---:|---:|---:|']
        out += [f"| {r['clients']} | {r['requests']} | {r['ms_p50']:.1f} | {r['ms_p99']:.1f} | {r['per_s']:.1f} |" for r in sorted(served, key=lambda r: r['clients'])]
    return '\n'.join(out) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000])
    p.add_argument('--dim', type=int, default=256)
    p.add_argument('--queries', type=int, default=500, help="single queries timed per index")
    p.add_argument('--kinds', nargs='+', default=KINDS, choices=KINDS)
    p.add_argument('--clients', type=int, nargs='+', default=[1, 4, 16])
    p.add_argument('--requests', type=int, default=50, help="requests per client")
    p.add_argument('--steps', type=int, default=150, help="training steps of the served model (shapes, the main job's model)")
    a = add_common(p).parse_args()
    if a.smoke: vars(a).update(SMOKE)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    out = results_dir(a, 'bench_index')
    log = out/'index_rows.jsonl'
    rows = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
    meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), dim=a.dim, queries=a.queries, **({'smoke': True} if a.smoke else {}))
    def save(new:list):
        with open(log, 'a') as f:
            for r in new: f.write(json.dumps(r) + '\n')
        rows.extend(new)
        (out/'index.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
        (out/'index.md').write_text(markdown(rows, meta))
    have = {(r['kind'], r['n'], r['d']) for r in rows if r['part'] == 'index'}
    for n in a.sizes:
        for kind in a.kinds:
            if (kind, n, a.dim) in have: print(f"{kind} {n:,}: done before, skipped", flush=True); continue
            r = index_row(kind, n, a.dim, a.queries)
            save([r])
            print(f"{kind} {n:,}: build {r['build_s']:.1f} s, {r['bytes'] / 2**20:.1f} MB, {r['ms_p50']:.2f} ms/query, recall@10 {r['recall10']:.3f}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for r in served_rows(a.clients, a.requests, a.steps, a.smoke, Path(work), {('served', r['clients']) for r in rows if r['part'] == 'served'}):
            save([r]); print(f"{r['clients']} clients: p50 {r['ms_p50']:.1f} ms, p99 {r['ms_p99']:.1f} ms, {r['per_s']:.1f} requests/s", flush=True)
    save([])
    print(markdown(rows, meta)); print(f"wrote {out/'index.json'} and {out/'index.md'}")


if __name__ == '__main__': main()
