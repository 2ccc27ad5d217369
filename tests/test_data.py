"""aair_nb.data: Karpathy/COCO loaders, bad input (each case with a real broken file), tokenizer, transforms,
collate, and the real RSICD test split when present. Test images are drawn with the shapes generator."""
import json, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

from aair_nb.data import (BadDataError, CaptionSet, Collate, eval_transform, load_coco, load_karpathy, load_tokenizer, rsicd_path,
                          train_tokenizer, train_transform)
from aair_nb.shapes import render_scene


# ---------------------------------------------------------------- loaders
def _images(folder:Path, names):
    for k, n in enumerate(names):
        (folder/n).parent.mkdir(parents=True, exist_ok=True)
        render_scene(0, 'test', k)[0].save(folder/n)


def _karpathy(folder:Path, name:str, images) -> Path:
    (folder/name).write_text(json.dumps({'images': images})); return folder/name


def _entry(fn, *caps, split='test'): return {'filename': fn, 'split': split, 'sentences': [{'raw': c} for c in caps]}


def test_load_karpathy(tmp_path):
    _images(tmp_path/'images', ['a.png', 'b.png', 'c.png'])
    p = _karpathy(tmp_path, 'dataset_x.json', [_entry('a.png', 'one', 'two', split='train'), _entry('b.png', 'three', split='restval'),
                                               _entry('c.png', 'four', split='test')])
    ds = load_karpathy(p)                                  # image_dir defaults to images/ beside the JSON; restval is train
    assert isinstance(ds, CaptionSet) and ds.n_images == 2 and len(ds) == 3
    assert ds.captions == ['one', 'two', 'three'] and ds.img2txt == [[0, 1], [2]] and ds.txt2img.tolist() == [0, 0, 1]
    item = ds[2]
    assert item['caption'] == 'three' and item['image_id'] == 1 and item['image'].shape == (3, 64, 64)
    assert load_karpathy(p, split='test').captions == ['four']
    assert ds.subset(1).captions == ['one', 'two']
    assert [x['image_id'] for x in ds.images()] == [0, 1]


def test_load_karpathy_filepath(tmp_path):
    _images(tmp_path, ['val2014/a.jpg'])
    p = _karpathy(tmp_path, 'dataset_coco.json', [{'filepath': 'val2014', 'filename': 'a.jpg', 'split': 'val', 'sentences': [{'raw': 'x'}]}])
    assert load_karpathy(p, image_dir=tmp_path, split='val').image_paths == [tmp_path/'val2014'/'a.jpg']


def test_load_coco(tmp_path):
    _images(tmp_path, ['x.jpg', 'y.jpg'])
    p = tmp_path/'captions_val2014.json'
    p.write_text(json.dumps({'images': [{'id': 42, 'file_name': 'x.jpg'}, {'id': 7, 'file_name': 'y.jpg'}],
                             'annotations': [{'image_id': 7, 'caption': 'a dog'}, {'image_id': 42, 'caption': 'a cat'},
                                             {'image_id': 7, 'caption': 'a brown dog'}]}))
    ds = load_coco(p, tmp_path)
    assert ds.captions == ['a cat', 'a dog', 'a brown dog'] and ds.img2txt == [[0], [1, 2]] and ds[2]['image_id'] == 1
    with pytest.raises(BadDataError, match='use load_coco'): load_karpathy(p, tmp_path)


@pytest.fixture
def broken(tmp_path):
    "A folder with good images, a truncated PNG, a truncated JPEG and a text file named .jpg."
    img = tmp_path/'images'
    _images(img, ['ok0.png', 'ok1.png', 'trunc.png'])
    b = (img/'trunc.png').read_bytes(); (img/'trunc.png').write_bytes(b[:len(b) // 2])
    render_scene(0, 'test', 0, size=192)[0].save(img/'full.jpg', quality=90)
    b = (img/'full.jpg').read_bytes(); (img/'trunc.jpg').write_bytes(b[:len(b) * 2 // 3])
    (img/'text.jpg').write_text('not an image')
    return tmp_path


@pytest.mark.parametrize('images, message', [
    ([_entry('ok0.png', 'a'), _entry('gone.png', 'b')], r"dataset_t\.json: images\[1\] \('gone\.png'\): image file not found"),
    ([_entry('ok0.png', 'a', '  ')], r"dataset_t\.json: images\[0\] \('ok0\.png'\): sentences\[1\] is empty"),
    ([_entry('ok0.png', 'a'), {'filename': 'ok1.png', 'split': 'test'}], r"dataset_t\.json: images\[1\] \('ok1\.png'\): no 'sentences' list"),
    ([{'filename': 'ok0.png', 'split': 'test', 'sentences': [{'tokens': ['a']}]}], r"images\[0\] \('ok0\.png'\): sentences\[0\] has no 'raw'"),
    ([{'split': 'test', 'sentences': [{'raw': 'a'}]}], r"dataset_t\.json: images\[0\]: no 'filename'"),
])
def test_bad_entries_raise(broken, images, message):
    p = _karpathy(broken, 'dataset_t.json', images)
    with pytest.raises(BadDataError, match=message): load_karpathy(p, split='test')


@pytest.mark.parametrize('text, message', [
    ('{"images": [{"filename": "ok0.png",', r"dataset_t\.json: not valid JSON \(line 1"),
    ('[1, 2]', r"dataset_t\.json: expected a Karpathy JSON object with an 'images' list"),
    ('{"images": [], "annotations": []}', r"dataset_t\.json: .*use load_coco"),
])
def test_wrong_json(broken, text, message):
    (broken/'dataset_t.json').write_text(text)
    with pytest.raises(BadDataError, match=message): load_karpathy(broken/'dataset_t.json')


@pytest.mark.parametrize('fn, message', [('trunc.png', 'truncated'), ('text.jpg', 'cannot identify image file'), ('trunc.jpg', 'truncated')])
def test_undecodable_image_raises_on_read(broken, fn, message):
    ds = load_karpathy(_karpathy(broken, 'dataset_t.json', [_entry('ok0.png', 'a'), _entry(fn, 'b')]), split='test')
    assert ds[0]['image'].shape == (3, 64, 64)
    with pytest.raises(BadDataError, match=rf"{fn}: cannot read image 1 of dataset_t\.json:test: .*{message}"): ds[1]


def test_skip_bad_counts(broken):
    p = _karpathy(broken, 'dataset_t.json', [
        _entry('ok0.png', 'good'), _entry('gone.png', 'b'), _entry('trunc.png', 'c'), _entry('text.jpg', 'd'), _entry('trunc.jpg', 'e'),
        _entry('ok1.png', 'x', '', 'y'), {'filename': 'ok1.png', 'split': 'test'}, _entry('ok0.png', ' ')])
    with pytest.warns(UserWarning) as w: ds = load_karpathy(p, split='test', skip_bad=True)
    msg = str(w[0].message)
    assert ds.captions == ['good', 'x', 'y'] and ds.img2txt == [[0], [1, 2]]
    assert ("(malformed entry: 1, empty caption: 2, missing image: 1, unreadable image: 3, image without captions: 1)" in msg
            and "first: dataset_t.json: images[1] ('gone.png')" in msg), msg
    with warnings.catch_warnings():
        warnings.simplefilter('error')                     # good files: no warning at all
        load_karpathy(_karpathy(broken, 'dataset_ok.json', [_entry('ok0.png', 'a')]), split='test', skip_bad=True)


def test_coco_bad_entries(broken):
    p = broken/'captions_t.json'
    p.write_text(json.dumps({'images': [{'id': 1, 'file_name': 'images/ok0.png'}, {'id': 2, 'file_name': 'images/ok1.png'}],
                             'annotations': [{'image_id': 1, 'caption': 'a'}, {'image_id': 3, 'caption': 'b'}, {'image_id': 2, 'caption': ''}]}))
    with pytest.raises(BadDataError, match=r"captions_t\.json: annotations\[1\]: image_id 3 is not in 'images'"): load_coco(p, broken)
    with pytest.warns(UserWarning, match=r"malformed entry: 1, empty caption: 1, image without captions: 1"):
        assert load_coco(p, broken, skip_bad=True).captions == ['a']


# ---------------------------------------------------------------- text, images, batches
def test_tokenizer_transforms_collate(tmp_path):
    _images(tmp_path/'images', ['a.png', 'b.png'])
    ds = load_karpathy(_karpathy(tmp_path, 'dataset_x.json', [_entry('a.png', 'a red circle left of a blue square', 'a red disc'),
                                                              _entry('b.png', 'a green box')]), split='test')
    tok = train_tokenizer(ds.captions, vocab_size=200, out_dir=tmp_path/'tok')
    assert tok.pad_token_id == 0 and tok.convert_ids_to_tokens(tok('a red disc')['input_ids']) == ['[CLS]', 'a', 'red', 'disc', '[SEP]']
    assert load_tokenizer(tmp_path/'tok')(ds.captions)['input_ids'] == tok(ds.captions)['input_ids']
    with pytest.raises(FileNotFoundError, match='train_tokenizer'): load_tokenizer(tmp_path/'nope')
    ds.transform = train_transform(32)
    assert not any('Flip' in type(t).__name__ for t in ds.transform.transform.transforms)
    b = Collate(tok, max_len=8)([ds[k] for k in range(3)])
    assert b['images'].shape == b['images_aug'].shape == (3, 3, 32, 32)
    ids, am = b['texts']
    assert ids.shape == am.shape == (3, 8)                                        # longest caption cut to max_len
    assert am.sum(1).tolist() == [8, 5, 5] and (ids[am == 0] == 0).all()
    assert b['image_ids'].tolist() == [0, 0, 1] and b['image_ids'].dtype == torch.long
    g = Collate(tok)([x for x in ds.images(eval_transform(48))])
    assert g['images'].shape == (2, 3, 48, 48) and 'texts' not in g and g['captions'][0] == ds.image_captions(0)


# ---------------------------------------------------------------- real data
def test_rsicd_test_split():
    root = rsicd_path()
    if root is None: pytest.skip("RSICD not found (set AAIR_RSICD or place it at ../shared/data/rsicd)")
    splits = [e['split'] for e in json.loads((root/'dataset_rsicd.json').read_text())['images']]
    assert [splits.count(s) for s in ('train', 'val', 'test')] == [8734, 1094, 1093]
    ds = load_karpathy(root/'dataset_rsicd.json', split='test')
    assert ds.n_images == 1093 and len(ds) == 5 * 1093 and all(len(k) == 5 for k in ds.img2txt)
    assert ds[len(ds) - 1]['image'].shape[0] == 3 and ds[len(ds) - 1]['image_id'] == 1092


def test_rsicd_classes_from_file_names():
    "RSICD's file names carry 30 scene classes; 921 numbered images carry none."
    root = rsicd_path()
    if root is None: pytest.skip("RSICD not found (set AAIR_RSICD or place it at ../shared/data/rsicd)")
    classes = [c for s in ('train', 'val', 'test') for c in load_karpathy(root/'dataset_rsicd.json', split=s, classes='filename').classes]
    assert len(classes) == 10921 and classes.count(None) == 921 and len(set(classes) - {None}) == 30
    assert load_karpathy(root/'dataset_rsicd.json', split='test').classes.count(None) == 1093     # 'entry': the JSON has no classes
