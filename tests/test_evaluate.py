"""aair_nb.evaluate: encoding once (shapes, determinism), ranking (= a loop of dot products), re-ranking (an oracle
scorer lifts R@1 to the ITC R@k, R@10 stays ITC's) and the keys of
`evaluate` / `evaluate_fn`, and every registered model against the contract. Runs on a tiny generated shapes set
with untrained `tiny` models."""
import numpy as np
import pytest
import torch
from aair_nb.core import set_seed
from aair_nb.shapes import make_shapes
from aair_nb.data import load_karpathy, train_tokenizer, Collate, train_transform
from aair_nb.metrics import retrieval_metrics
from aair_nb.contract import build, model_config, check_model, import_models
from aair_nb.model import AAIR
from aair_nb.fusion import rerank
from aair_nb.evaluate import (encode_dataset, similarities, pair_score_fn, two_way_metrics, evaluate, evaluate_fn, worst_queries)

KEYS = {'i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum', 'mR',
        'i2t_medr', 'i2t_meanr', 't2i_medr', 't2i_meanr'}

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = make_shapes(tmp_path_factory.mktemp('shapes'), n_train=8, n_val=2, n_test=12, seed=0)
    ds = load_karpathy(root, split='test')
    tok = train_tokenizer(load_karpathy(root, split='train').captions + ds.captions, vocab_size=200)
    set_seed(0)
    model = _model('aair', tok).eval()
    enc = encode_dataset(model, ds, tok, batch_size=16, progress=False)
    return ds, tok, model, enc

def _model(name, tok, train=None):
    cfg = model_config(name, 'tiny'); cfg.text.vocab_size = len(tok)
    return build(name, cfg, tokenizer=tok, train=train).model

def test_encode_shapes(setup):
    ds, tok, model, enc = setup
    n_img, n_txt, d = ds.n_images, len(ds), model.config.embed_dim
    assert enc.img.emb.shape == (n_img, d) and enc.txt.emb.shape == (n_txt, d)
    assert enc.img.feats.shape[0] == n_img and enc.img.mask.shape == enc.img.feats.shape[:2]
    assert enc.txt.feats.shape[0] == n_txt and enc.txt.mask.shape == enc.txt.feats.shape[:2]
    assert enc.txt.mask.dtype == torch.bool and enc.txt.mask.any(1).all()
    torch.testing.assert_close(enc.img.emb.norm(dim=-1), torch.ones(n_img))
    torch.testing.assert_close(enc.txt.emb.norm(dim=-1), torch.ones(n_txt))

def test_encode_deterministic_and_batch_free(setup):
    ds, tok, model, enc = setup
    model.train()                                   # dropout on: encode_dataset must switch to eval and back
    again = encode_dataset(model, ds, tok, batch_size=5, progress=False)
    assert model.training
    model.eval()
    torch.testing.assert_close(again.img.emb, enc.img.emb, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again.txt.emb, enc.txt.emb, atol=1e-5, rtol=1e-4)
    # padding to a different common length must not change the real token features
    m = enc.txt.mask
    torch.testing.assert_close(again.txt.feats[:, :m.shape[1]][m], enc.txt.feats[m], atol=1e-5, rtol=1e-4)

def test_no_locals_without_fusion(setup):
    ds, tok, _, _ = setup
    model = _model('vsepp', tok)
    enc = encode_dataset(model, ds, tok, progress=False)
    assert not enc.has_locals and enc.txt.feats is None
    with pytest.raises(ValueError, match='no encoder features'): pair_score_fn(model, enc)

def test_similarities_are_a_loop_of_dot_products(setup):
    model, enc = setup[2], setup[3]
    sims = similarities(model, enc)
    loop = torch.tensor([[float(v @ t) for t in enc.txt.emb] for v in enc.img.emb])
    torch.testing.assert_close(sims, loop, atol=1e-5, rtol=1e-5)

def _oracle(txt2img):
    t2i = torch.as_tensor(txt2img)
    return lambda i, j: (t2i[j] == i).float()

@pytest.mark.parametrize('seed', [0, 1])
def test_oracle_rerank_lifts_r1_to_itc_rk(seed):
    g = torch.Generator().manual_seed(seed)
    n_img, per = 30, 5
    txt2img = np.repeat(np.arange(n_img), per)
    sims = torch.randn(n_img, n_img * per, generator=g)
    itc = retrieval_metrics(sims, txt2img, return_ranks=True)
    for k in (1, 3, 10):
        s_i2t, s_t2i, _ = rerank(sims, _oracle(txt2img), k, batch_size=17)
        rr = two_way_metrics(s_i2t, s_t2i, txt2img)
        for d in ('i2t', 't2i'):
            inside = 100 * (itc[f'{d}_ranks'] < k).mean()   # queries whose answer is in the ITC top k
            assert rr[f'{d}_r1'] == pytest.approx(inside)
        assert rr['t2i_r10'] == pytest.approx(itc['t2i_r10']) and rr['i2t_r10'] == pytest.approx(itc['i2t_r10'])
        assert rr['rsum'] == pytest.approx(sum(rr[f'{d}_r{r}'] for d in ('i2t', 't2i') for r in (1, 5, 10)))

def test_pair_score_fn_matches_model(setup):
    ds, tok, model, enc = setup
    i, j = [0, 3, 5], [1, 2, 30]
    ti, tj = torch.tensor(i), torch.tensor(j)
    with torch.no_grad():                           # one pair at a time, each caption cut to its own tokens
        p = torch.cat([model.itm_scores(enc.img.feats[a:a+1], enc.img.mask[a:a+1],
                                        enc.txt.feats[b:b+1, enc.txt.mask[b]], enc.txt.mask[b:b+1, enc.txt.mask[b]])
                       for a, b in zip(i, j)])
        itc_logit = torch.stack([enc.img.emb[a] @ enc.txt.emb[b] for a, b in zip(i, j)]) / model.temp()
    logodds = torch.log(p) - torch.log1p(-p)
    torch.testing.assert_close(pair_score_fn(model, enc, rerank_itc=0)(ti, tj), logodds, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pair_score_fn(model, enc)(ti, tj), logodds + itc_logit, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pair_score_fn(model, enc, rerank_itc=0.5)(ti, tj), logodds + 0.5 * itc_logit, atol=1e-4, rtol=1e-4)

def test_evaluate_keys(setup):
    ds, tok, model, enc = setup
    r = evaluate(model, ds, tok, rerank_k=5, progress=False, return_scores=True)
    assert set(r['itc']) == KEYS and set(r['rerank']) == KEYS
    assert {'encode_s', 'rank_s', 'rerank_s', 'rerank_ms_per_query'} <= set(r['timings'])
    assert r['sims'].shape == (ds.n_images, len(ds))
    torch.testing.assert_close(r['sims'], similarities(model, enc), atol=1e-5, rtol=1e-4)
    assert r['scores_i2t'].shape == r['sims'].shape and r['scores_t2i'].shape == r['sims'].T.shape
    assert 'rerank' not in evaluate(model, ds, tok, enc=enc, progress=False)

def test_evaluate_without_second_stage_warns(setup):
    ds, tok, _, _ = setup
    with pytest.warns(UserWarning, match='no second stage'):
        r = evaluate(_model('vsepp', tok), ds, tok, rerank_k=5, progress=False)
    assert 'rerank' not in r and set(r['itc']) == KEYS

def test_evaluate_fn_flat(setup):
    ds, tok, model, enc = setup
    flat = evaluate_fn(ds, tok, rerank_k=3)(model)
    assert set(flat) == KEYS | {f'rerank_{k}' for k in KEYS}
    assert all(isinstance(v, float) for v in flat.values())
    assert flat['mR'] == pytest.approx(flat['rsum'] / 6)

def test_worst_queries(setup):
    ds, _, model, enc = setup
    sims = similarities(model, enc)
    idx, ranks = worst_queries(sims, ds.txt2img, n=4)
    all_ranks = retrieval_metrics(sims, ds.txt2img, return_ranks=True)['t2i_ranks']
    assert list(ranks) == sorted(all_ranks, reverse=True)[:4] and list(all_ranks[idx]) == list(ranks)

@pytest.mark.parametrize('name', sorted(import_models()))   # every model of the package
def test_registered_models_keep_the_contract(setup, name):
    "Every registered model trains on a batch, embeds, scores and (when it says so) re-ranks as the contract says."
    ds, tok, _, _ = setup
    model = _model(name, tok, train=ds)                               # a model that learns from classes reads them here
    sub = ds.subset(8)
    sub.transform = train_transform(model.config.image_size, mean=model.config.image_mean, std=model.config.image_std)
    out = check_model(model, Collate(tok, max_len=model.config.max_len)([sub[i] for i in range(0, 40, 5)]))
    out['loss'].backward()
    assert any(p.grad is not None for p in model.parameters())
