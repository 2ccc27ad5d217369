"""Every bench/ script runs in its `--smoke` mode (the same code as the real benchmark on tiny data, seconds long) and writes
result files with every key the committed results in bench/results/ have (the docs read those keys). The smokes are
started together, in subprocesses, when the first test of this file needs them; each test waits for its own."""
import importlib, shlex, json, os, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH, RESULTS = ROOT/'bench', ROOT/'bench'/'results'
FILES = {'bench_shapes': ['shapes_gen.json'], 'bench_metrics': ['metrics.json'], 'bench_speed': ['speed.json', 'speed.md'],
         'bench_ablation': ['ablation.json', 'ablation.md'], 'bench_rsicd': ['rsicd.json', 'rsicd.md'],
         'bench_rerank': ['rerank.json', 'rerank.md'], 'bench_index': ['index.json', 'index.md'], 'bench_dxr': ['dxr.json', 'dxr.md'],
         'bench_finegrained': ['finegrained.json', 'finegrained.md']}
OPTIONAL = {'rsicd.json': {'.meta.first_cache_minutes'}, 'finegrained.json': {'.rows[].skipped'}}   # keys a run writes only in some cases
TIMEOUT = 240


def bench_module(name:str):
    "A module of bench/ (the scripts import their helpers from bench/_bench.py), imported without leaving bench/ on sys.path."
    sys.path.insert(0, str(BENCH))
    try: return importlib.import_module(name)
    finally: sys.path.remove(str(BENCH))


def _snapshot(d:Path) -> dict: return {p.name: p.stat().st_mtime_ns for p in d.iterdir()} if d.exists() else {}


@pytest.fixture(scope='module')
def smokes(tmp_path_factory):
    "Start every script's smoke at once (each into its own results folder); name -> (Popen, results folder, log file, start time)."
    before, tmp, procs = _snapshot(RESULTS), tmp_path_factory.mktemp('bench'), {}
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')
    env.pop('AAIR_BENCH_RESULTS', None)
    for name in FILES:
        res, log = tmp/name, open(tmp/f'{name}.log', 'w+')
        cmd = [sys.executable, f'bench/{name}.py', '--smoke', '--results', str(res)]
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), res, log, time.time())
    yield procs
    for p, _, log, _ in procs.values():
        if p.poll() is None: p.kill(); p.wait()
        log.close()
    assert _snapshot(RESULTS) == before, "a --smoke run wrote to bench/results/"


def _finish(smokes, name:str) -> Path:
    "Wait for the smoke of `name`; fail with its output unless it exited 0; its results folder."
    p, res, log, t0 = smokes[name]
    try: p.wait(timeout=max(1, TIMEOUT - (time.time() - t0)))
    except subprocess.TimeoutExpired: p.kill(); p.wait()
    log.seek(0); out = log.read()
    assert p.returncode == 0, f"bench/{name}.py --smoke exited with {p.returncode}:\n{out[-5000:]}"
    for f in FILES[name]: assert (res/f).is_file(), f"bench/{name}.py --smoke wrote no {f} in --results:\n{out[-3000:]}"
    return res


def missing_keys(ref, got, path='') -> list:
    "Dotted paths of the keys of `ref` (nested dicts; the items of lists of dicts taken together) that `got` lacks."
    if isinstance(ref, dict) and isinstance(got, dict):
        out = []
        for k, v in ref.items():
            if k not in got: out.append(f'{path}.{k}')
            else: out += missing_keys(v, got[k], f'{path}.{k}')
        return out
    if isinstance(ref, list) and isinstance(got, list) and all(isinstance(x, dict) for x in ref + got):
        merge = lambda xs: {k: next(x[k] for x in xs if k in x) for x in xs for k in x}
        return missing_keys(merge(ref), merge(got), path + '[]') if ref and got else []
    return []


def check_keys(res:Path, fname:str):
    "The smoke's result file has every key of the committed one."
    got = json.loads((res/fname).read_text())
    assert got.get('meta', got).get('smoke') is True, f"{fname} of a smoke run is not marked smoke: true"
    if not (RESULTS/fname).exists(): return
    miss = set(missing_keys(json.loads((RESULTS/fname).read_text()), got)) - OPTIONAL.get(fname, set())
    assert not miss, f"{fname}: keys of bench/results/{fname} missing from the smoke's: {sorted(miss)}"


def test_shapes(smokes):
    res = _finish(smokes, 'bench_shapes')
    check_keys(res, 'shapes_gen.json')
    assert json.loads((res/'shapes_gen.json').read_text())['images_per_s'] > 0


def test_metrics(smokes):
    res = _finish(smokes, 'bench_metrics')
    check_keys(res, 'metrics.json')
    m = json.loads((res/'metrics.json').read_text())
    assert m['shape'] == [50, 250] and set(m['peak_extra_mb']) == {'max_pass', 'vectorised', 'loop'}


def test_speed(smokes):
    res = _finish(smokes, 'bench_speed')
    check_keys(res, 'speed.json')
    r = json.loads((res/'speed.json').read_text())['results']
    assert [x['setting'] for x in r] == ['tiny', 'tiny eval', 'small', 'small eval', 'small_rsicd', 'medium_rsicd']
    small, small_rsicd, medium_rsicd = r[2], r[4], r[5]
    assert small_rsicd['trainable_params_M'] < small['trainable_params_M']   # `small` trains all of MiniLM, the recipe its top 2 layers
    assert medium_rsicd['trainable_params_M'] > small_rsicd['trainable_params_M'] and medium_rsicd['step_s_median'] > 0
    assert '| medium_rsicd |' in (res/'speed.md').read_text()


def test_ablation(smokes):
    res = _finish(smokes, 'bench_ablation')
    check_keys(res, 'ablation.json')
    a = json.loads((res/'ablation.json').read_text())
    LADDER = bench_module('bench_ablation').LADDER
    assert [r['row'] for r in a['runs']] == [n for n, _ in LADDER]
    fused = [n for n, _ in LADDER if 'ITC ranking' in n]                 # the rows with a fusion encoder
    assert fused and all(('rerank' in r) == (r['row'] in fused) for r in a['runs'])
    names = [r['row'] for r in a['rows']]
    for n in fused: assert names[names.index(n) + 1] == n.replace('ITC ranking', 're-ranked top-16')   # each followed by its re-ranking


def test_ablation_resumes(smokes):
    "Run again into the same results folder, the ablation skips every finished run (read from ablation_runs.jsonl) and reports the same rows."
    res = _finish(smokes, 'bench_ablation')
    before = json.loads((res/'ablation.json').read_text())
    lines = (res/'ablation_runs.jsonl').read_text().splitlines()
    assert len(lines) == len(before['runs'])
    r = subprocess.run([sys.executable, 'bench/bench_ablation.py', '--smoke', '--results', str(res)], cwd=ROOT, capture_output=True,
                       text=True, timeout=TIMEOUT, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count('done before, skipped') == len(lines)
    after = json.loads((res/'ablation.json').read_text())
    assert after['rows'] == before['rows'] and (res/'ablation_runs.jsonl').read_text().splitlines() == lines


def test_ablation_report(smokes, tmp_path):
    "`--report` trains nothing: the tables come from the kept runs, and a run that is not kept is named and left out of them."
    import shutil
    res = shutil.copytree(_finish(smokes, 'bench_ablation'), tmp_path/'res')
    lines = (res/'ablation_runs.jsonl').read_text().splitlines()
    (res/'ablation_runs.jsonl').write_text('\n'.join(lines[1:]) + '\n')   # forget the first row's run
    r = subprocess.run([sys.executable, 'bench/bench_ablation.py', '--smoke', '--report', '--results', str(res)], cwd=ROOT, capture_output=True,
                       text=True, timeout=TIMEOUT, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    first = json.loads(lines[0])['row']
    assert r.stdout.count('not run, left out') == 1 and f'{first} seed 0: not run, left out' in r.stdout
    a = json.loads((res/'ablation.json').read_text())
    assert first not in [x['row'] for x in a['rows']] and len(a['runs']) == len(lines) - 1
    assert (res/'ablation_runs.jsonl').read_text().splitlines() == lines[1:]   # nothing trained, nothing added
    r = subprocess.run([sys.executable, 'bench/bench_ablation.py', '--smoke', '--report', '--study', 'zoo', '--results', str(res)], cwd=ROOT,
                       capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    assert r.returncode != 0 and 'no kept run' in r.stderr and not (res/'zoo.md').exists()   # no zoo run kept: no empty table written


def test_zoo(tmp_path):
    "The zoo study has every registered model; a model that re-ranks gets a re-ranked row; the first-stage rows carry class metrics and costs."
    from aair_nb.contract import import_models
    r = subprocess.run([sys.executable, 'bench/bench_ablation.py', '--smoke', '--study', 'zoo', '--results', str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    z = json.loads((tmp_path/'zoo.json').read_text())
    models = {run['flags'][run['flags'].index('--model') + 1] for run in z['runs']}
    assert models == set(import_models()), f"registered models missing from the zoo: {set(import_models()) - models}"
    reranked = {run['flags'][run['flags'].index('--model') + 1] for run in z['runs'] if 'rerank' in run}
    assert reranked == {'aair', 'pcme'}, reranked                       # the models with a second stage: fusion encoder, match probability
    rows = {row['row']: row for row in z['rows']}
    assert len(rows) == len(z['runs']) + sum('rerank' in run for run in z['runs'])
    for run in z['runs']:
        row = rows[run['row']]
        assert row['class']['mean']['i2t_map'] == pytest.approx(run['class']['i2t_map'])      # one seed: the mean is the run
        assert row['cost']['eval_seconds'] > 0
    assert '| class mAP i2t |' in (tmp_path/'zoo.md').read_text()


def test_levers(tmp_path):
    "The recipe levers: one run per lever with exactly its flags added, a validation table of one line per lever (no re-ranked twins)."
    LEVERS = bench_module('bench_ablation').LEVERS
    r = subprocess.run([sys.executable, 'bench/bench_ablation.py', '--smoke', '--study', 'levers', '--results', str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    z = json.loads((tmp_path/'levers.json').read_text())
    assert [run['flags'][-len(f):] if f else [] for run, (_, f) in zip(z['runs'], LEVERS)] == [f for _, f in LEVERS]
    lines = [l for l in (tmp_path/'levers.md').read_text().splitlines() if l.startswith('| ') and not l.startswith('| row')]
    assert [l.split(' | ')[0][2:] for l in lines] == [name for name, _ in LEVERS]
    assert 'validation split' in (tmp_path/'levers.md').read_text()


def test_rerank(smokes):
    "Every (w, k) setting on both splits after the first stage; re-ranking the top k only reorders them, so R@K for K >= k stays."
    res = _finish(smokes, 'bench_rerank')
    check_keys(res, 'rerank.json')
    r = json.loads((res/'rerank.json').read_text())
    for split in ('val', 'test'):
        rows = [x for x in r['rows'] if x['split'] == split]
        first = rows[0]
        assert first['k'] == 0 and [(x['w'], x['k']) for x in rows[1:]] == [(w, k) for w in r['meta']['weights'] for k in r['meta']['ks']]
        for x in rows:
            assert abs(x['rsum'] - 6 * x['mR']) < 1e-6
            if x['k'] == 2: assert (x['i2t_r5'], x['i2t_r10']) == (first['i2t_r5'], first['i2t_r10'])
    assert '**' in (res/'rerank.md').read_text()


def test_rsicd(smokes):
    res = _finish(smokes, 'bench_rsicd')
    check_keys(res, 'rsicd.json')
    r = json.loads((res/'rsicd.json').read_text())
    m = r['meta']
    assert m['command'].startswith('aair_train ') and '--cache-features' in m['command'] and m['views'] == 3
    words = shlex.split(m['command'])
    assert not [words[i + 1] for i, w in enumerate(words) if w in ('--data', '--out') and words[i + 1].startswith('/')], m['command']   # project-relative
    assert set(m['val_mR_by_views']) == {'0', '3'}
    assert len(r['ours']) == 4, [o['method'] for o in r['ours']]          # ITC and re-ranked, without and with the turned views
    assert m['batch_size'] == 8 and m['step_s_median'] > 0 and m['peak_rss_mb'] > 100   # the cost side: 2 steps at batch 8
    md = (res/'rsicd.md').read_text()
    assert 'RSICD test split' in md and f"{m['step_s_median']:.2f} s per step of 8 pairs" in md


def test_rsicd_flags(smokes):
    "bench_rsicd's FLAGS are the documented runs: small (and medium) preset, encoders tuned at the top only, cached (small: with 3 turned views)."
    bench_rsicd = bench_module('bench_rsicd')
    from aair_nb.cli import train_parser, run_config
    config = lambda preset: run_config(train_parser().parse_args(bench_rsicd.command(Path('/data'), Path('/run'), 3, [], bench_rsicd.FLAGS[preset]))).to_dict()
    c = config('small')
    assert c['preset'] == 'small' and c['model_name'] == 'aair'
    assert c['model']['image']['tune_top'] == 4 and c['model']['image']['frozen']
    assert c['model']['text']['tune_top'] == 2
    assert c['data']['cache'] and c['data']['cache_views'] == 3 and c['train']['lr'] == 3e-4 and c['eval']['rerank_k'] == 16
    assert bench_rsicd.parts(c) == dict(
        frozen=['EfficientNet-Lite0 stem and blocks 1-13', 'MiniLM-L6 embeddings and layers 1-4'],
        trained=['EfficientNet-Lite0 blocks 14-16 and head', 'MiniLM-L6 layers 5-6', 'projections', 'GPO', 'temperature',
                 'fusion encoder + ITM head'])
    m = config('medium')                                                  # the same recipe on the medium encoders
    assert (m['preset'], m['model']['image']['kind'], m['model']['text']['kind']) == ('medium', 'efficientnet_lite2', 'mpnet')
    assert bench_rsicd.parts(m)['frozen'] == ['EfficientNet-Lite2 stem and blocks 1-20', 'MPNet embeddings and layers 1-10']
    assert bench_rsicd.parts(m)['trained'][:2] == ['EfficientNet-Lite2 block 21 and head', 'MPNet layers 11-12']
    assert m['data']['cache'] and m['data']['cache_views'] == 0                # no turned training images (about 40 more minutes of caching)
    assert bench_rsicd.result_stem('small') == 'rsicd' and bench_rsicd.result_stem('medium') == 'rsicd_medium'


def test_index(smokes):
    "Every index kind at the smoke's size, exact search with recall 1, and the served rows for each number of clients."
    res = _finish(smokes, 'bench_index')
    check_keys(res, 'index.json')
    r = json.loads((res/'index.json').read_text())
    idx = {row['kind']: row for row in r['rows'] if row['part'] == 'index'}
    assert set(idx) == {'flat', 'hnsw', 'ivfpq'} and idx['flat']['recall10'] == 1.0
    assert all(0 < row['recall10'] <= 1 and row['ms_p50'] <= row['ms_p99'] for row in idx.values())
    assert idx['ivfpq']['bytes'] < idx['flat']['bytes'] < idx['hnsw']['bytes']            # codes < vectors < vectors + links
    served = [row for row in r['rows'] if row['part'] == 'served']
    assert [row['clients'] for row in served] == [1, 2] and all(row['requests'] == 8 * row['clients'] and row['per_s'] > 0 for row in served)


def test_dxr(smokes):
    "No augmentation first (k = 0), then every k for each external index; the swaps leave weights and encodings bit-identical."
    res = _finish(smokes, 'bench_dxr')
    check_keys(res, 'dxr.json')
    r = json.loads((res/'dxr.json').read_text())
    assert r['meta']['bit_identical_after_swaps'] is True
    assert [(x['external'], x['k']) for x in r['rows']] == [('none', 0)] + [(e, k) for e in ('training split', 'shapes (another domain)') for k in (1, 4, 16)]


def test_finegrained(smokes):
    "The first stage, then every second stage at each depth; 'all' scores every pair; a deeper re-ranking scores more pairs."
    res = _finish(smokes, 'bench_finegrained')
    check_keys(res, 'finegrained.json')
    rows = json.loads((res/'finegrained.json').read_text())['rows']
    assert rows[0]['stage'] == 'first'
    second = {(r['model'], r['k']): r for r in rows[1:]}
    assert set(second) == {(m, k) for m in ('aair', 'teran', 'imram') for k in ('2', 'all')}
    for m in ('aair', 'teran', 'imram'): assert second[(m, '2')]['pairs'] < second[(m, 'all')]['pairs'] == 4 * 20


def test_ensure_run_resumes(tmp_path, capsys):
    "A benchmark's run is finished when it has metrics.json: a run stopped after its checkpoint resumes from it, a finished one is not trained again."
    _bench = bench_module('_bench')
    train_setup, ensure_run = _bench.train_setup, _bench.ensure_run
    _, flags = train_setup(True, tmp_path, 2)                          # 2 steps at batch 8 on a tiny shapes set
    run = ensure_run(tmp_path/'run', flags)
    assert json.loads((run/'history.json').read_text())['step'][-1] == 2
    (run/'metrics.json').unlink()                                      # as if stopped after its last checkpoint
    i = flags.index('--max-steps')
    ensure_run(run, flags[:i + 1] + ['4'] + flags[i + 2:])
    assert 'resuming' in capsys.readouterr().out
    assert json.loads((run/'history.json').read_text())['step'][-1] == 4 and (run/'metrics.json').exists()
    mtime = (run/'metrics.json').stat().st_mtime_ns
    ensure_run(run, flags)                                             # finished: used as it is
    assert (run/'metrics.json').stat().st_mtime_ns == mtime
