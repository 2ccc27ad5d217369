"""aair_nb.metrics: ranks against a literal reference (the definitions written as pure-Python loops over every pair),
on Hypothesis-generated matrices full of ties, +-inf, uneven and shuffled captions; the 3 x 6 worked example of
nbs/03_metrics.ipynb; invariances; the metrics formulas; COCO 1K/5K folds; input errors; the table row."""
import json
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from aair_nb.metrics import retrieval_ranks, metrics_from_ranks, retrieval_metrics, format_metrics, coco_1k_5k

KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum', 'mR',
        'i2t_medr', 'i2t_meanr', 't2i_medr', 't2i_meanr']


def ref_ranks(S, g):
    """The definitions, pair by pair: t2i = wrong images scoring >= the right one; i2t = the minimum over the image's
    captions c of the wrong captions scoring >= c (a different form from the library's count above the best caption)."""
    S, g = np.asarray(S).tolist(), list(map(int, g))
    n_img, n_txt = len(S), len(g)
    t2i = [sum(1 for i in range(n_img) if i != g[j] and S[i][j] >= S[g[j]][j]) for j in range(n_txt)]
    i2t = [min(sum(1 for j in range(n_txt) if g[j] != i and S[i][j] >= S[i][c]) for c in range(n_txt) if g[c] == i)
           for i in range(n_img)]
    return np.array(i2t), np.array(t2i)


@st.composite
def inputs(draw, max_img=7):
    "(S [n_img, n_txt] float32, txt2img [n_txt]): 1-5 captions per image in any order; scores with many ties or +-inf."
    counts = draw(st.lists(st.integers(1, 5), min_size=1, max_size=max_img))
    g = np.array(draw(st.permutations(np.repeat(np.arange(len(counts)), counts).tolist())))
    values = draw(st.sampled_from([st.sampled_from([0.0, 1.0]),                      # ties everywhere
                                   st.sampled_from([-1.0, 0.0, 0.25, 1.0]),
                                   st.floats(-3, 3, width=32),
                                   st.floats(-3, 3, width=32) | st.sampled_from([np.inf, -np.inf])]))
    S = np.array(draw(st.lists(values, min_size=len(counts) * len(g), max_size=len(counts) * len(g))), dtype=np.float32)
    return S.reshape(len(counts), len(g)), g


@settings(max_examples=150, deadline=None)
@given(inputs(), st.sampled_from([1, 2, None]))
def test_ranks_match_reference(x, rows):
    S, g = x
    i2t, t2i = retrieval_ranks(S, g, chunk_rows=rows)
    want = ref_ranks(S, g)
    np.testing.assert_array_equal(i2t, want[0]); np.testing.assert_array_equal(t2i, want[1])
    assert i2t.dtype == np.int64 and t2i.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(inputs(), st.randoms(use_true_random=False))
def test_relabelling_images_and_captions(x, rnd):
    "Permuting images (rows, relabelled in txt2img) and captions (columns) permutes the ranks the same way."
    S, g = x
    i2t, t2i = retrieval_ranks(S, g)
    pi = np.array(rnd.sample(range(S.shape[0]), S.shape[0]))     # new row r holds old image pi[r]
    pt = np.array(rnd.sample(range(S.shape[1]), S.shape[1]))     # new column c holds old caption pt[c]
    inv = np.argsort(pi)                                         # old image -> new row
    i2t2, t2i2 = retrieval_ranks(S[pi][:, pt], inv[g[pt]])
    np.testing.assert_array_equal(i2t2, i2t[pi]); np.testing.assert_array_equal(t2i2, t2i[pt])


@settings(max_examples=60, deadline=None)
@given(inputs())
def test_bounds_and_monotone_transform(x):
    "0 <= t2i < n_img, 0 <= i2t <= n_txt - |C(i)|; a strictly increasing map of the scores changes nothing."
    S, g = x
    i2t, t2i = retrieval_ranks(S, g)
    counts = np.bincount(g, minlength=S.shape[0])
    assert ((0 <= t2i) & (t2i < S.shape[0])).all() and ((0 <= i2t) & (i2t <= len(g) - counts)).all()
    i2t2, t2i2 = retrieval_ranks(S.astype(np.float64) ** 3, g)           # exact in float64, keeps every order and tie
    np.testing.assert_array_equal(i2t2, i2t); np.testing.assert_array_equal(t2i2, t2i)


S_HAND = np.array([[0.9, 0.5, 0.1, 0.2, 0.3, 0.4],
                   [0.6, 0.2, 0.6, 0.6, 0.3, 0.4],
                   [0.6, 0.4, 0.7, 0.5, 0.8, 0.3]], dtype=np.float32)
G_HAND = np.array([0, 0, 1, 1, 1, 2])


def test_hand_example():
    "The 3 x 6 example written out in the notebook: ties count against the query, right captions never do."
    m = retrieval_metrics(S_HAND, G_HAND, return_ranks=True)
    assert list(m)[:12] == KEYS
    np.testing.assert_array_equal(m['i2t_ranks'], [0, 1, 5]); np.testing.assert_array_equal(m['t2i_ranks'], [0, 0, 1, 0, 2, 2])
    np.testing.assert_array_equal(m['i2t_top1'], [0, 0, 4])
    assert [m[k] for k in KEYS] == pytest.approx([100 / 3, 200 / 3, 100, 50, 100, 100, 450, 75, 2, 3, 1, 11 / 6])
    assert all(type(m[k]) is float for k in KEYS)
    json.dumps({k: m[k] for k in KEYS})


def test_ties_are_pessimistic():
    "A collapsed model (all scores equal) gets the worst rank for every query; a perfect one rank 0."
    counts = np.array([1, 5, 2, 3])
    g = np.repeat(np.arange(4), counts)
    i2t, t2i = retrieval_ranks(np.full((4, len(g)), 0.3, dtype=np.float32), g)
    np.testing.assert_array_equal(i2t, len(g) - counts); np.testing.assert_array_equal(t2i, np.full(len(g), 3))
    m = retrieval_metrics(np.ones((4, len(g))), g)
    assert m['t2i_r1'] == 0 and m['i2t_r1'] == 0
    i2t, t2i = retrieval_ranks(np.eye(4)[:, g], g)
    assert not i2t.any() and not t2i.any()


def test_inputs_torch_numpy_dtypes():
    g = np.repeat(np.arange(30), 3)
    S = torch.randn(30, 90, generator=torch.Generator().manual_seed(0))
    want = retrieval_metrics(S.numpy(), g, return_ranks=True)
    for s, gg in [(S, torch.from_numpy(g)), (S.requires_grad_(), g.tolist()), (S.detach().double().numpy(), g.astype(np.int32)),
                  (S.detach().to(torch.bfloat16), g)]:
        got = retrieval_metrics(s, gg, return_ranks=True)
        if s.dtype == torch.bfloat16:                       # NumPy has no bfloat16: ranked as the rounded float32 values
            np.testing.assert_array_equal(got['t2i_ranks'], retrieval_ranks(s.float().numpy(), g)[1]); continue
        for k in KEYS: assert got[k] == pytest.approx(want[k])
        np.testing.assert_array_equal(got['t2i_ranks'], want['t2i_ranks'])
    ints = retrieval_ranks(np.array([[3, 1, 1], [1, 3, 0]]), [0, 0, 1])
    np.testing.assert_array_equal(ints[0], [0, 2]); np.testing.assert_array_equal(ints[1], [0, 1, 1])


def test_large_chunks_agree():
    "Default chunks (up to 255 rows, uint8 column sums) equal one-row chunks on a matrix taller than 255 rows."
    rng = np.random.default_rng(1)
    S, g = rng.standard_normal((600, 1200)).astype(np.float32), np.repeat(np.arange(600), 2)
    S[:, ::7] = 0.0                                               # plenty of ties in many columns
    a, b = retrieval_ranks(S, g), retrieval_ranks(S, g, chunk_rows=1)
    c = retrieval_ranks(S, g, chunk_rows=255)
    for x, y in zip(a, b): np.testing.assert_array_equal(x, y)
    for x, y in zip(c, b): np.testing.assert_array_equal(x, y)
    assert b[1].max() > 255                                        # counts above one byte were really accumulated


def test_metrics_from_ranks_formulas():
    m = metrics_from_ranks(np.array([0, 4, 5, 9, 10]), np.array([0, 0, 1, 2]))
    assert m['i2t_r1'] == 20 and m['i2t_r5'] == 40 and m['i2t_r10'] == 80
    assert m['t2i_r1'] == 50 and m['t2i_r5'] == m['t2i_r10'] == 100
    assert m['rsum'] == pytest.approx(390) and m['mR'] == pytest.approx(65)
    assert m['i2t_medr'] == 6 and m['i2t_meanr'] == pytest.approx(6.6)
    assert m['t2i_medr'] == 1 and m['t2i_meanr'] == pytest.approx(1.75)   # median 0.5 -> floor 0 -> 1 (VSE-infinity)
    with pytest.raises(ValueError, match='no ranks'): metrics_from_ranks([], [0])


@pytest.mark.parametrize('args, err, msg', [
    ((S_HAND, [0, 0, 1, 1, 1, 1]), ValueError, r'1 of 3 images have no caption \(image indices \[2\]\)'),
    ((np.zeros((30, 2)), [0, 1]), ValueError, r'28 of 30 images have no caption \(image indices \[2, 3, .* \.\.\.\)'),
    ((S_HAND.T, G_HAND), ValueError, 'is sims transposed'),
    ((S_HAND, G_HAND[:5]), ValueError, 'one image index per text'),
    ((S_HAND, [0, 0, 1, 1, 1, 3]), ValueError, r'outside \[0, 3\)'),
    ((S_HAND, [-1, 0, 1, 1, 1, 2]), ValueError, r'outside \[0, 3\)'),
    ((S_HAND, G_HAND.astype(float)), TypeError, 'integer image indices'),
    ((S_HAND.astype(bool), G_HAND), TypeError, 'real numbers'),
    ((S_HAND[0], G_HAND), ValueError, 'must be 2-D'),
    ((np.zeros((3, 0)), []), ValueError, 'sims is empty'),
])
def test_errors(args, err, msg):
    with pytest.raises(err, match=msg): retrieval_ranks(*args)
    with pytest.raises(err, match=msg): retrieval_metrics(*args)


def test_nan_is_an_error():
    for idx, msg in [((2, 1), r'sims holds NaN \(rows 0 to 2\)'), ((1, 3), 'NaN in 1 right')]:
        S = S_HAND.copy(); S[idx] = np.nan
        with pytest.raises(ValueError, match=msg): retrieval_ranks(S, G_HAND)
    with pytest.raises(ValueError, match='between 1 and 255'): retrieval_ranks(S_HAND, G_HAND, chunk_rows=300)


def test_coco_1k_5k():
    rng = np.random.default_rng(0)
    g = rng.permutation(np.repeat(np.arange(50), rng.integers(1, 6, 50)))      # 50 images, uneven, shuffled
    S = rng.standard_normal((50, len(g))).astype(np.float32)
    S[:, ::3] = 0.5                                                               # ties
    r = coco_1k_5k(S, g, fold_size=10)
    assert set(r) == {'1k', '5k'} and list(r['1k']) == KEYS
    folds = []
    for f in range(5):
        keep = (g >= 10 * f) & (g < 10 * f + 10)
        folds.append(metrics_from_ranks(*ref_ranks(S[10 * f:10 * f + 10][:, keep], g[keep] - 10 * f)))
    for k in KEYS: assert r['1k'][k] == pytest.approx(np.mean([fm[k] for fm in folds]))
    assert r['5k'] == pytest.approx(metrics_from_ranks(*ref_ranks(S, g)))
    with pytest.raises(ValueError, match='pass fold_size=10'): coco_1k_5k(S, g)
    with pytest.raises(ValueError, match='needs 5 folds'): coco_1k_5k(S[:49][:, g < 49], g[g < 49], fold_size=10)


def test_format_metrics():
    m = retrieval_metrics(S_HAND, G_HAND)
    lines = format_metrics(m, 'ITC ranking').splitlines()
    assert len(lines) == 3 and len({len(l) for l in lines}) == 1
    assert [c.strip() for c in lines[0].split('|')[1:-1]] == ['', 'i2t R@1', 'i2t R@5', 'i2t R@10', 't2i R@1', 't2i R@5',
                                                               't2i R@10', 'rsum', 'mR']
    assert [c.strip() for c in lines[2].split('|')[1:-1]] == ['ITC ranking', '33.3', '66.7', '100.0', '50.0', '100.0',
                                                              '100.0', '450.0', '75.0']
    assert format_metrics(m, 'x', header=False, digits=2).count('|') == 10 and '33.33' in format_metrics(m, header=False, digits=2)
    with pytest.raises(KeyError, match='missing keys'): format_metrics({'rsum': 1.0})


def test_bench_runs_small(root, tmp_path):
    "bench/bench_metrics.py still finds the notebook's loop, agrees with it and writes its result file."
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location('bench_metrics', root/'bench'/'bench_metrics.py')
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root/'bench'))                      # its helpers, bench/_bench.py, whatever ran before
    try: spec.loader.exec_module(bench)
    finally: sys.path.remove(str(root/'bench'))
    out = tmp_path/'metrics.json'
    bench.main(['--n_img', '40', '--repeats', '1', '--loop_frac', '0.5', '--out', str(out)])
    res = json.loads(out.read_text())
    assert res['shape'] == [40, 200] and res['loop_over_vectorised'] > 0 and set(res['peak_extra_mb']) == {'max_pass', 'vectorised', 'loop'}


def test_class_map_matches_sklearn():
    "Class mAP (same class = relevant, full ranking) equals scikit-learn's average precision per query, averaged."
    from sklearn.metrics import average_precision_score
    from aair_nb.metrics import class_metrics
    rng = np.random.default_rng(0)
    n_img = 20; g = np.repeat(np.arange(n_img), 3); labels = rng.integers(0, 4, n_img)
    S = rng.standard_normal((n_img, len(g)))                       # no ties: every AP definition agrees
    m = class_metrics(S, g, labels.tolist())
    tl = labels[g]
    ap_i2t = [average_precision_score(tl == labels[i], S[i]) for i in range(n_img)]
    ap_t2i = [average_precision_score(labels == tl[j], S[:, j]) for j in range(len(g))]
    assert m['i2t_map'] == pytest.approx(100 * np.mean(ap_i2t)) and m['t2i_map'] == pytest.approx(100 * np.mean(ap_t2i))
    assert m['n_classes'] == len(set(labels.tolist())) and m['labelled_captions'] == len(g)
