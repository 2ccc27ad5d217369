"""aair_nb.shapes: the generator is deterministic (an image depends on (seed, split, index) only), its captions are
true to the pixels, the caption checker catches wrong captions, and `default_shapes` reuses a complete cached set."""
import json
from aair_nb.shapes import INVERSE, SPLITS, caption_errors, default_shapes, make_shapes, measure_scene, render_scene


def test_make_shapes_deterministic(tmp_path):
    a, b = make_shapes(tmp_path/'a', 12, 4, 4, seed=3), make_shapes(tmp_path/'b', 12, 4, 4, seed=3)
    assert a.name == 'dataset_shapes.json' and json.loads(a.read_text()) == json.loads(b.read_text())
    for fn in ('train_00000.png', 'train_00011.png', 'val_00003.png', 'test_00002.png'):
        assert (a.parent/'images'/fn).read_bytes() == (b.parent/'images'/fn).read_bytes()
    c = make_shapes(tmp_path/'c', 12, 4, 4, seed=4)
    assert json.loads(c.read_text())['images'][0]['sentences'] != json.loads(a.read_text())['images'][0]['sentences']
    d = make_shapes(tmp_path/'d', 6, 0, 0, seed=3)       # an image depends on (seed, split, index) only
    assert (d.parent/'images'/'train_00005.png').read_bytes() == (a.parent/'images'/'train_00005.png').read_bytes()
    entries = json.loads(a.read_text())['images']
    assert [sum(e['split'] == s for e in entries) for s in SPLITS] == [12, 4, 4]
    assert all(len(e['sentences']) == 5 and len({s['raw'] for s in e['sentences']}) == 5 for e in entries)


def test_captions_are_true_to_the_pixels():
    for split in SPLITS:
        for i in range(60):
            img, scene, caps = render_scene(0, split, i)
            ms = measure_scene(img, scene)
            for o, m in zip(scene['objects'], ms['objects']):
                assert m['box'] is not None and all(abs(p - q) <= 1 for p, q in zip(m['box'], o['box'])), (split, i, o, m)
            for c in caps: assert caption_errors(c, ms) == [], (split, i, c)


def test_caption_checker_catches_wrong_captions():
    i = next(i for i in range(100) if len(render_scene(0, 'train', i)[1]['objects']) == 2)
    img, scene, _ = render_scene(0, 'train', i)
    ms = measure_scene(img, scene)
    (a, b), rel = scene['objects'], 'left of' if scene['axis'] == 'h' else 'above'
    assert caption_errors(f"a {a['color']} {a['shape']} {rel} a {b['color']} {b['shape']}", ms) == []
    assert caption_errors(f"a {b['color']} {a['shape']} {rel} a {a['color']} {b['shape']}", ms)          # binding swapped
    assert caption_errors(f"a {a['color']} {a['shape']} {INVERSE[rel]} a {b['color']} {b['shape']}", ms)  # relation inverted
    assert caption_errors(f"three shapes: a {a['color']} {a['shape']} {rel} a {b['color']} {b['shape']}", ms)


def test_default_shapes_reuses(tmp_path):
    p = default_shapes(tmp_path, 8, 4, 4)
    t = p.stat().st_mtime_ns
    assert default_shapes(tmp_path, 8, 4, 4) == p and p.stat().st_mtime_ns == t
    (p.parent/'images'/'test_00001.png').unlink()
    assert default_shapes(tmp_path, 8, 4, 4) == p and (p.parent/'images'/'test_00001.png').exists()
