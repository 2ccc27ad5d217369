"""Retrieval augmentation (DXR-style) on RSICD: queries fused with their nearest neighbours from an external index.

Trains the main job's model on RSICD with the `small` preset (the flags of bench_rsicd.py, --steps steps; or takes
--run), indexes RSICD's training split (images and captions) as the external index, and tests with image queries
augmented by their k nearest training captions and caption queries by their k nearest training images, for each k in
--ks; alpha (the neighbours' weight) is chosen on the validation split for each k. Then the external index is swapped:
for a collection of another domain (the generated shapes set, encoded with the same model) and for none, with the
model's weights and the test encodings checked bit-identical across the swaps. Every finished row is appended to
bench/results/dxr_rows.jsonl at once and skipped when the script runs again; the run and the indices are kept in --work
(default ~/.cache/aair_nb/bench_dxr) so that a stopped benchmark resumes. Writes bench/results/dxr.{json,md}.

    python bench/bench_dxr.py                     # RSICD (../shared/data/rsicd or $AAIR_RSICD)
    python bench/bench_dxr.py --smoke             # 2 steps on an 8/4/4 shapes set; temporary folders only
"""
import argparse, hashlib, json, os, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

from _bench import add_common, results_dir, portable, train_setup, ensure_run

KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum', 'mR']


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', type=Path, default=None, help="a trained run folder to use (default: train one into --work)")
    p.add_argument('--steps', type=int, default=682, help="training steps when the script trains (682 = one RSICD epoch at batch 64)")
    p.add_argument('--ks', type=int, nargs='+', default=[1, 4, 16])
    p.add_argument('--alphas', type=float, nargs='+', default=[.25, .5, 1.])
    p.add_argument('--tau', type=float, default=.05)
    p.add_argument('--work', type=Path, default=Path('~/.cache/aair_nb/bench_dxr').expanduser())
    a = add_common(p).parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    out = results_dir(a, 'bench_dxr')
    import torch
    from aair_nb.cli import load_run, _split_cache
    from aair_nb.config import load_split
    from aair_nb.evaluate import encode_dataset
    from aair_nb.index import build_index, LoadedIndex
    from aair_nb.dxr import dxr_metrics
    from aair_nb.shapes import default_shapes, make_shapes
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name) if a.smoke else a.work
    work.mkdir(parents=True, exist_ok=True)
    data, flags = train_setup(a.smoke, work, a.steps)
    other = make_shapes(work/'other', 8, 0, 0, seed=11) if a.smoke else default_shapes()
    run = a.run or ensure_run(work/'run', flags)                                      # a given run is used as it is
    model, tok, cfg = load_run(run, device='cpu')
    digest = lambda: hashlib.sha256(b''.join(v.cpu().numpy().tobytes() for v in model.state_dict().values())).hexdigest()[:16]
    w0 = digest()
    ext_paths = {'RSICD training split' if not a.smoke else 'training split': (work/'ext_train', dict(splits=('train',))),
                 'shapes (another domain)': (work/'ext_shapes', dict(data=other, splits=('train',)))}
    externals = {}
    for name, (path, kw) in ext_paths.items():
        if not (path/'index.json').exists():
            print(f"indexing {name} ...", flush=True); build_index(run, path, progress=not a.smoke, **kw)
        externals[name] = LoadedIndex(path)
    splits = {s: load_split(cfg.data, s) for s in ('val', 'test')}
    enc = {s: encode_dataset(model, ds, tok, progress=False, cache=_split_cache(model, tok, cfg, ds, s, 0, False)) for s, ds in splits.items()}
    log = out/'dxr_rows.jsonl'
    key0 = dict(run=str(run.resolve()), data=portable(data) if not a.smoke else 'smoke shapes', weights=w0)
    rows = [r for r in map(json.loads, log.read_text().splitlines()) if r['key']['weights'] == w0] if log.exists() else []
    have = {(r['external'], r['k']) for r in rows}
    def row(name, ext, k, alpha):
        if (name, k) in have: print(f"{name} k={k}: done before, skipped", flush=True); return
        t0 = time.perf_counter()
        m = dxr_metrics(enc['test'], splits['test'].txt2img, ext, k, alpha, a.tau)
        r = dict(external=name, k=k, alpha=alpha, tau=a.tau, test={x: float(m[x]) for x in KEYS}, seconds=time.perf_counter() - t0,
                 external_items=len(ext) if ext is not None else 0, key=key0)
        with open(log, 'a') as f: f.write(json.dumps(r) + '\n')
        rows.append(r); print(f"{name} k={k} alpha={alpha:g}: test rsum {m['rsum']:.1f}, mR {m['mR']:.1f}", flush=True)
    main_ext = next(iter(externals))
    row('none', None, 0, 0.)
    alpha = {k: max(a.alphas, key=lambda al: dxr_metrics(enc['val'], splits['val'].txt2img, externals[main_ext], k, al, a.tau)['rsum']) for k in a.ks}
    for name, ext in externals.items():
        for k in a.ks: row(name, ext, k, alpha[k])
    enc2 = encode_dataset(model, splits['test'], tok, progress=False, cache=_split_cache(model, tok, cfg, splits['test'], 'test', 0, False))
    identical = digest() == w0 and torch.equal(enc2.img.emb, enc['test'].img.emb) and torch.equal(enc2.txt.emb, enc['test'].txt.emb)
    meta = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d'), cpus=os.cpu_count(), run=key0['run'], data=key0['data'], model=cfg.model_name,
                preset=cfg.preset, weights_digest=w0, bit_identical_after_swaps=identical, alphas_by_val={str(k): v for k, v in alpha.items()},
                **({'smoke': True} if a.smoke else {}))
    (out/'dxr.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    lines = [f"Retrieval augmentation on {meta['data']} (model `{meta['model']}`, preset `{meta['preset']}`; alpha chosen on validation per k, "
             f"tau {a.tau}); weights and test encodings bit-identical across the swaps: {identical}.", '',
             '| external index | items | k | alpha | R@1 i2t | R@5 i2t | R@1 t2i | R@5 t2i | rsum | mR |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        t = r['test']
        lines.append(f"| {r['external']} | {r['external_items']:,} | {r['k']} | {r['alpha']:g} | {t['i2t_r1']:.1f} | {t['i2t_r5']:.1f} | {t['t2i_r1']:.1f} | "
                     f"{t['t2i_r5']:.1f} | {t['rsum']:.1f} | {t['mR']:.1f} |")
    (out/'dxr.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines)); print(f"wrote {out/'dxr.json'} and {out/'dxr.md'}")
    tmp.cleanup()


if __name__ == '__main__': main()
