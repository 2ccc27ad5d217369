"""Property-based tests of the caption-file loaders: random Karpathy and COCO files (valid, malformed and in between)
and random bytes. Whatever the file holds, a loader either returns a consistent data set of exactly the usable
entries, or raises a `BadDataError` / `FileNotFoundError` that names the file; with `skip_bad=True` it never fails on
a bad entry, only counts it."""
import json, warnings
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from aair_nb.data import BadDataError, load_karpathy, load_coco

IMAGES = ['a.png', 'b.png', 'c.png']                 # exist; 'gone.png' does not
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(alphabet=st.characters(blacklist_categories=('Cs',)), max_size=12)
caption = st.one_of(text, st.just('  '), st.just('a red circle'))
sentence = st.one_of(st.fixed_dictionaries({'raw': caption}), st.fixed_dictionaries({'tokens': st.lists(text, max_size=2)}), st.integers())
entry = st.one_of(
    st.fixed_dictionaries({'filename': st.sampled_from(IMAGES + ['gone.png']), 'split': st.sampled_from(['train', 'val', 'test', 'restval', 'odd']),
                           'sentences': st.lists(sentence, max_size=4)}),
    st.fixed_dictionaries({'filename': st.sampled_from(IMAGES), 'split': st.just('test'), 'sentences': st.lists(st.fixed_dictionaries({'raw': caption}), min_size=1, max_size=3)}),
    st.dictionaries(st.sampled_from(['filename', 'split', 'sentences']), st.one_of(text, st.integers(), st.none()), max_size=3),
    st.integers(), st.none())


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp('prop')
    (d/'images').mkdir()
    for n in IMAGES: Image.new('RGB', (8, 8), 'red').save(d/'images'/n)
    return d


def _usable(e, split) -> list|None:
    "The captions the loader must keep for entry `e` of `split`, or None when the entry is bad or outside the split."
    if not isinstance(e, dict) or not isinstance(e.get('filename'), str) or not e['filename'].strip(): return None
    if not isinstance(e.get('split'), str) or not (e['split'] == split or (split == 'train' and e['split'] == 'restval')): return None
    s = e.get('sentences')
    if not isinstance(s, list) or not s or not all(isinstance(x, dict) and isinstance(x.get('raw'), str) for x in s): return None
    caps = [x['raw'].strip() for x in s if x['raw'].strip()]
    return caps if caps and e['filename'] in IMAGES else None


@SETTINGS
@given(entries=st.lists(entry, max_size=8), split=st.sampled_from(['train', 'test']))
def test_karpathy_keeps_exactly_the_usable_entries(folder, entries, split):
    p = folder/'dataset_prop.json'; p.write_text(json.dumps({'images': entries}))
    want = [(e['filename'], c) for e in entries if (c := _usable(e, split)) is not None]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: ds = load_karpathy(p, split=split, skip_bad=True)
        except BadDataError as err:
            assert not want and 'dataset_prop.json: no usable images' in str(err); return
    assert [(q.name, ds.image_captions(i)) for i, q in enumerate(ds.image_paths)] == want
    assert len(ds) == sum(len(c) for _, c in want) and all(ds.txt2img[k] == i for i, ks in enumerate(ds.img2txt) for k in ks)
    try: strict = load_karpathy(p, split=split)                   # without skip_bad: the same set, or the first bad entry named
    except BadDataError as err: assert 'dataset_prop.json' in str(err) and '--skip-bad' in str(err)
    else: assert strict.captions == ds.captions


@SETTINGS
@given(ids=st.lists(st.one_of(st.integers(0, 4), text), max_size=5, unique=True),
       anns=st.lists(st.tuples(st.one_of(st.integers(0, 5), text), caption), max_size=10))
def test_coco_keeps_exactly_the_usable_annotations(folder, ids, anns):
    images = [{'id': i, 'file_name': (IMAGES + ['gone.png'])[k % 4]} for k, i in enumerate(ids)]
    p = folder/'captions_prop.json'
    p.write_text(json.dumps({'images': images, 'annotations': [{'image_id': i, 'caption': c} for i, c in anns]}))
    known = {im['id']: im['file_name'] for im in images}
    per = {i: [c.strip() for j, c in anns if j == i and j in known and c.strip()] for i in known}
    want = [(known[i], per[i]) for i in known if per[i] and known[i] in IMAGES]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: ds = load_coco(p, folder/'images', skip_bad=True)
        except BadDataError as err:
            assert not want and 'captions_prop.json: no usable images' in str(err); return
    assert [(q.name, ds.image_captions(i)) for i, q in enumerate(ds.image_paths)] == want


@SETTINGS
@given(blob=st.one_of(st.binary(max_size=64), text.map(str.encode), st.just(b'{"images": [')))
def test_any_bytes_give_a_named_error_or_a_set(folder, blob):
    p = folder/'dataset_bytes.json'; p.write_bytes(blob)
    for load in (lambda: load_karpathy(p, split='test'), lambda: load_coco(p, folder/'images')):
        try: load()
        except BadDataError as err: assert 'dataset_bytes.json' in str(err)
