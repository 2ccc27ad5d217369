"""The bad-input corpus: every corruption a user has met (and a few more) run against `aair_train`, `aair_eval` and
`aair_search` as console-script functions. Each must end in one line `prog: error: ...` (exit status 1), an argparse
usage error (2), a counted skip, or correct output, and must not change anything already in a run folder.
The corpus is generated here from a small shapes set; one tiny run (two steps) is trained for the commands that read
a run folder."""
import hashlib, json, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from aair_nb.shapes import make_shapes
from aair_nb.cli import train_main, eval_main, search_main, run_lock, EXIT_INTERRUPTED

TRAIN = ['--max-steps', '2', '--batch-size', '8', '--rerank-k', '4', '--quiet']


def cli(main, argv, capsys) -> tuple:
    "(exit status, the error text) of one console-script call; (0, '') when it finished."
    capsys.readouterr()
    try: main([str(a) for a in argv]); return 0, ''
    except SystemExit as e:
        if isinstance(e.code, str): return 1, e.code
        return e.code, capsys.readouterr().err.strip()


def one_line_error(res, prog:str, *parts):
    code, msg = res
    assert code == 1, f"expected an error, got status {code}: {msg}"
    assert msg.startswith(f"{prog}: error: ") and '\n' not in msg and 'Traceback' not in msg, msg
    for p in parts: assert p in msg, f"{p!r} not in: {msg}"


def snapshot(folder:Path) -> dict:
    "Every file under `folder` with the SHA-1 of its bytes and its modification time."
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    "A good small data set, its corruptions (Karpathy and COCO files, images) and one trained run."
    root = tmp_path_factory.mktemp('corpus')
    good = make_shapes(root/'shapes', 16, 8, 8, seed=3)
    d = json.loads(good.read_text()); img = good.parent/'images'
    def variant(name, fn=None, text=None, raw=None):
        p = good.parent/name
        if raw is not None: p.write_bytes(raw)
        elif text is not None: p.write_text(text)
        else: dd = json.loads(json.dumps(d)); fn(dd); p.write_text(json.dumps(dd))
        return p
    first_train = next(i for i, e in enumerate(d['images']) if e['split'] == 'train')
    def set_file(name):
        def fn(dd): dd['images'][first_train]['filename'] = name
        return fn
    c = dict(good=good, img=img, root=root)
    c['truncated'] = variant('dataset_truncated.json', text=good.read_text()[:300])
    c['latin1'] = variant('dataset_latin1.json', raw='{"images": [{"filename": "caf\xe9.png"}]}'.encode('latin-1'))
    c['list'] = variant('dataset_list.json', text='[1, 2, 3]')
    c['missing'] = variant('dataset_missing.json', set_file('gone.png'))
    c['empty_caption'] = variant('dataset_empty.json', lambda dd: dd['images'][first_train]['sentences'][1].update(raw='  '))
    c['no_filename'] = variant('dataset_nofile.json', lambda dd: dd['images'][first_train].pop('filename'))
    c['no_train'] = variant('dataset_notrain.json', lambda dd: [e.update(split='bogus') for e in dd['images'] if e['split'] == 'train'])
    png = (img/d['images'][first_train]['filename']).read_bytes()
    (img/'trunc.png').write_bytes(png[:len(png) // 2])
    (img/'text.png').write_text('not an image')
    (img/'zero.png').write_bytes(b'')
    Image.fromarray((np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)).save(img/'grey16.png')
    c['trunc_png'] = variant('dataset_trunc.json', lambda dd: [e.update(filename='trunc.png') for e in dd['images'] if e['split'] == 'train'])
    def several_bad(dd):
        tr = [e for e in dd['images'] if e['split'] == 'train']
        tr[0]['filename'] = 'trunc.png'; tr[1]['filename'] = 'gone.png'; tr[2]['sentences'] = []; tr[3]['filename'] = 'grey16.png'
    c['several_bad'] = variant('dataset_several.json', several_bad)
    coco = {'images': [{'id': k, 'file_name': e['filename']} for k, e in enumerate(d['images'])],
            'annotations': [{'image_id': k, 'caption': s['raw']} for k, e in enumerate(d['images']) for s in e['sentences']]}
    c['coco'] = root/'captions.json'; c['coco'].write_text(json.dumps(coco))
    c['run'] = root/'run'
    res = train_main(['--data', str(good), '--out', str(c['run'])] + TRAIN)
    assert res is None and (c['run']/'metrics.json').exists()
    return c


# ---------------------------------------------------------------- aair_train: the input, checked before anything is written
@pytest.mark.parametrize('case, extra, parts', [
    ('truncated', [], ['dataset_truncated.json', 'not a JSON captions file']),
    ('latin1', [], ['dataset_latin1.json', 'not a JSON captions file']),
    ('latin1', ['--format', 'karpathy'], ['dataset_latin1.json', 'not UTF-8']),
    ('list', [], ['dataset_list.json', "expected a Karpathy JSON object with an 'images' list"]),
    ('missing', [], ["dataset_missing.json: images[", "('gone.png'): image file not found", '--skip-bad']),
    ('empty_caption', [], ['dataset_empty.json: images[', 'sentences[1] is empty']),
    ('no_filename', [], ["dataset_nofile.json: images[", "no 'filename'"]),
    ('no_train', [], ["no usable images in split 'train'"]),
    ('coco', [], ['captions.json', '--images DIR']),
    ('coco', ['--images', '{img}'], ['captions.json', 'no train/val/test splits', '--holdout N']),
    ('coco', ['--images', '{img}', '--holdout', '16'], ['data.holdout=16', 'needs 1 <= holdout < 32 / 2']),
    ('good', ['--images', '{root}/nope'], ['image folder of dataset_shapes.json not found']),
    ('good', ['--holdout', '3'], ['this Karpathy file has its own']),
    ('good', ['--epochs', '0'], ['train.epochs=0 must be at least 1']),
    ('good', ['--epochs', '-2'], ['train.epochs=-2 must be at least 1']),
    ('good', ['--batch-size', '0'], ['train.batch_size=0 must be at least 1']),
    ('good', ['--batch-size', '1'], ['train.batch_size=1', 'use 2 or more']),
    ('good', ['--lr', 'nan'], ['train.lr=nan must be a positive number']),
    ('good', ['--set', 'train.lrr=1'], ["unknown key 'train.lrr'", 'did you mean train.lr']),
    ('good', ['--model', 'nope'], ["unknown model 'nope'"]),
    ('good', ['--preset', 'nope'], ["unknown preset 'nope'"]),
    ('good', ['--cache-views', '2'], ['--cache-views needs --cache-features']),
    ('good', ['--plugin', '{root}/nope.py'], ['nope.py']),
    ('good', ['--set', 'train.best_key=rsumm'], ["train.best_key='rsumm'", 'validation reports i2t_r1']),
    ('good', ['--set', 'train.device=gpu'], ["train.device='gpu' must be 'auto', 'cpu'"]),
])
def test_train_input_errors(corpus, tmp_path, capsys, case, extra, parts):
    out = tmp_path/'out'
    argv = ['--data', corpus[case], '--out', out] + TRAIN + [a.format(**{k: v for k, v in corpus.items()}) for a in extra]   # extra last: it wins
    one_line_error(cli(train_main, argv, capsys), 'aair_train', *parts)
    assert not out.exists(), "a refused run must leave no folder behind"


def test_data_file_not_found(tmp_path, capsys):
    one_line_error(cli(train_main, ['--data', tmp_path/'nope.json', '--out', tmp_path/'o'], capsys), 'aair_train', 'nope.json', 'no such data file')


# ---------------------------------------------------------------- aair_train: the run folder
def test_existing_run_is_never_replaced(corpus, capsys):
    before = snapshot(corpus['run'])
    one_line_error(cli(train_main, ['--data', corpus['good'], '--out', corpus['run']] + TRAIN, capsys), 'aair_train', 'holds a run already', '--overwrite')
    one_line_error(cli(train_main, ['--data', corpus['missing'], '--out', corpus['run'], '--overwrite'] + TRAIN, capsys), 'aair_train', 'gone.png')
    one_line_error(cli(train_main, ['--data', corpus['several_bad'], '--out', corpus['run'], '--resume'] + TRAIN, capsys),
                   'aair_train', 'trained with other data.json', 'another --out')
    one_line_error(cli(train_main, ['--out', corpus['run'], '--resume', '--preset', 'small'] + TRAIN, capsys), 'aair_train', "is preset 'tiny'")
    one_line_error(cli(train_main, ['--out', corpus['run'], '--resume', '--set', 'model.embed_dim=64'] + TRAIN, capsys),
                   'aair_train', 'model.embed_dim')
    with run_lock(corpus['run']):                                  # another aair_train is writing the folder
        one_line_error(cli(train_main, ['--out', corpus['run'], '--resume'] + TRAIN, capsys), 'aair_train', 'another aair_train is writing')
    assert snapshot(corpus['run']) == before


def test_folder_of_the_python_api_is_a_run(corpus, tmp_path, capsys):
    "A folder with only a checkpoint (the Python `fit` writes no run.json) is not replaced; a failed run never removes the user's files."
    out = tmp_path/'fitrun'; shutil.copytree(corpus['run']/'last', out/'last')
    one_line_error(cli(train_main, ['--data', corpus['good'], '--out', out] + TRAIN, capsys), 'aair_train', 'holds a run already')
    mine = tmp_path/'mine'; mine.mkdir(); (mine/'config.json').write_text('{"mine": 1}')
    one_line_error(cli(train_main, ['--data', corpus['good'], '--out', mine] + TRAIN, capsys), 'aair_train', 'holds a run already (config.json)')
    (mine/'config.json').unlink(); (mine/'notes.txt').write_text('x')     # a file no run writes: the run may use the folder
    one_line_error(cli(train_main, ['--data', corpus['trunc_png'], '--out', mine] + TRAIN, capsys), 'aair_train', 'cannot read image')
    assert [p.name for p in mine.iterdir()] == ['notes.txt'] and (mine/'notes.txt').read_text() == 'x'


def test_resume_of_nothing(tmp_path, capsys):
    one_line_error(cli(train_main, ['--out', tmp_path/'empty', '--resume'], capsys), 'aair_train', 'no run to resume', 'drop --resume')


def test_unreadable_image_mid_training_leaves_nothing(corpus, tmp_path, capsys):
    "Truncated PNGs are found when their batch is read (only --skip-bad decodes every image up front): one line, no half run folder."
    out = tmp_path/'trunc'
    one_line_error(cli(train_main, ['--data', corpus['trunc_png'], '--out', out] + TRAIN, capsys), 'aair_train', 'trunc.png: cannot read image')
    assert not out.exists()


def test_diverging_run_stops_with_the_reason(corpus, tmp_path, capsys):
    "A learning rate that blows the weights up: the loss check names the step and the settings to change (not a sampler error)."
    out = tmp_path/'nan'
    one_line_error(cli(train_main, ['--data', corpus['good'], '--out', out] + TRAIN + ['--lr', '1e30', '--max-steps', '4'], capsys),
                   'aair_train', 'non-finite loss at step', 'train.lr')
    assert not out.exists() or (out/'last'/'model.safetensors').exists()       # nothing, or the last good checkpoint


def test_skip_bad_counts_and_trains(corpus, tmp_path, capsys):
    "Several bad entries at once, skipped and counted per reason; the 16-bit PNG is not bad and loads with its contrast."
    out = tmp_path/'skip'
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert cli(train_main, ['--data', corpus['several_bad'], '--out', out, '--skip-bad'] + TRAIN, capsys) == (0, '')
    msg = [str(x.message) for x in w if 'skipped bad data' in str(x.message)]
    assert msg and 'missing image: 1' in msg[0] and 'unreadable image: 1' in msg[0] and 'malformed entry: 1' in msg[0], msg
    m = json.loads((out/'metrics.json').read_text())
    assert m['config']['data']['skip_bad'] and m['itc']['rsum'] > 0


def test_sixteen_bit_png_is_not_white(corpus):
    from aair_nb.data import load_karpathy
    d = json.loads(corpus['good'].read_text())
    e = next(e for e in d['images'] if e['split'] == 'test'); e['filename'] = 'grey16.png'
    p = corpus['good'].parent/'dataset_16.json'; p.write_text(json.dumps({'images': [e]}))
    x = np.asarray(load_karpathy(p, split='test').load_image(0))
    assert x.min() == 0 and x.max() == 255 and (x == 255).mean() < 0.01


def test_sigint_exits_130_without_metrics(corpus, tmp_path):
    "Ctrl-C during training: `last/` is saved, no test metrics are written, the exit status is 130, and --resume finishes the run."
    exe = Path(sys.executable).parent/'aair_train'
    out = tmp_path/'int'
    argv = [str(exe), '--data', str(corpus['good']), '--out', str(out), '--epochs', '400', '--batch-size', '8', '--quiet']
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out/'last'/'model.safetensors').exists() and time.time() - t0 < 240 and p.poll() is None: time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1].startswith('aair_train: interrupted: stopped at step'), err
    assert not (out/'metrics.json').exists() and (out/'last'/'model.safetensors').exists()
    r = subprocess.run(argv[:-5] + ['--out', str(out), '--resume', '--epochs', '2', '--quiet'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (out/'metrics.json').exists(), r.stderr


# ---------------------------------------------------------------- aair_eval
def _copy_run(corpus, tmp_path) -> Path:
    run = tmp_path/'run'; shutil.copytree(corpus['run'], run); return run


def test_eval_bad_checkpoints(corpus, tmp_path, capsys):
    run = _copy_run(corpus, tmp_path)
    w = run/'best'/'model.safetensors'; w.write_bytes(w.read_bytes()[:1000])
    one_line_error(cli(eval_main, [run, '--quiet'], capsys), 'aair_eval', 'best/model.safetensors: not a readable safetensors file')
    shutil.rmtree(run/'best')                                       # no best: the last checkpoint is read, and recorded as such
    assert cli(eval_main, [run, '--quiet', '--out', tmp_path/'e.json'], capsys) == (0, '')
    assert json.loads((tmp_path/'e.json').read_text())['checkpoint'] == 'last'
    s = run/'last'/'state.pt'; s.write_bytes(s.read_bytes()[:200])
    saved = (run/'run.json').read_bytes()
    one_line_error(cli(train_main, ['--out', run, '--resume', '--max-steps', '3', '--quiet'], capsys), 'aair_train', 'state.pt: cannot read the training state')
    assert (run/'run.json').read_bytes() == saved                   # a failed resume leaves the run's config as it was
    cfg = json.loads((run/'run.json').read_text()); cfg['model']['embed_dim'] = 48; (run/'run.json').write_text(json.dumps(cfg))
    one_line_error(cli(eval_main, [run, '--quiet'], capsys), 'aair_eval', 'the weights do not fit this model', 'tensor(s) of another shape')
    shutil.rmtree(run/'last')
    one_line_error(cli(eval_main, [run, '--quiet'], capsys), 'aair_eval', 'no best checkpoint')
    one_line_error(cli(eval_main, [tmp_path/'nothing'], capsys), 'aair_eval', 'not a run folder')


def test_eval_options(corpus, tmp_path, capsys):
    before = snapshot(corpus['run'])
    one_line_error(cli(eval_main, [corpus['run'], '--views', '9', '--quiet', '--out', tmp_path/'v.json'], capsys), 'aair_eval', '0..7')
    code, err = cli(eval_main, [corpus['run'], '--rerank-k', '-1'], capsys)
    assert code == 2 and 'is negative' in err.splitlines()[-1]
    one_line_error(cli(eval_main, [corpus['run'], '--data', corpus['coco'], '--images', corpus['img'], '--quiet'], capsys), 'aair_eval', '--holdout N')
    assert cli(eval_main, [corpus['run'], '--data', corpus['coco'], '--images', corpus['img'], '--holdout', '4', '--quiet',
                           '--out', tmp_path/'c.json'], capsys) == (0, '')
    one_line_error(cli(eval_main, [corpus['run'], '--data', corpus['missing'], '--split', 'train', '--quiet'], capsys), 'aair_eval', 'gone.png', '--skip-bad')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert cli(eval_main, [corpus['run'], '--data', corpus['missing'], '--split', 'train', '--skip-bad', '--quiet',
                               '--out', tmp_path/'s.json'], capsys) == (0, '')
    assert any('missing image: 1' in str(x.message) for x in w)
    assert snapshot(corpus['run']) == before


# ---------------------------------------------------------------- aair_search
@pytest.mark.parametrize('argv, code, part', [
    (['-k', '0', '--text', 'a red circle'], 2, '0: give 1 or more'),
    (['-k', '-3', '--text', 'a red circle'], 2, '-3: give 1 or more'),
    (['--text', ''], 1, '--text is empty'),
    (['--text', '   '], 1, '--text is empty'),
    (['--image', '{img}'], 1, 'is a folder'),
    (['--image', '{img}/zero.png'], 1, 'zero.png: not an image that can be read'),
    (['--image', '{img}/text.png'], 1, 'text.png: not an image that can be read'),
    (['--image', '{img}/trunc.png'], 1, 'trunc.png: not an image that can be read'),
    (['--image', '{img}/nope.png'], 1, 'no such image file'),
    (['--rerank-k', '-1', '--text', 'a'], 2, 'is negative'),
])
def test_search_errors(corpus, capsys, argv, code, part):
    res = cli(search_main, [corpus['run']] + [a.format(img=corpus['img']) for a in argv], capsys)
    if code == 1: one_line_error(res, 'aair_search', part)
    else: assert res[0] == 2 and part in res[1].splitlines()[-1], res


def test_search_draws_at_most_max_drawn(corpus, tmp_path, capsys, monkeypatch):
    "All k results are printed; the picture holds MAX_DRAWN of them (here 3, so that an 8-image gallery can show the limit)."
    import aair_nb.cli
    monkeypatch.setattr(aair_nb.cli, 'MAX_DRAWN', 3)
    out = tmp_path/'s.png'
    assert cli(search_main, [corpus['run'], '--text', 'a red circle', '-k', 6, '--out', out], capsys) == (0, '')
    printed = capsys.readouterr().out
    assert len([l for l in printed.splitlines() if l[:2].rstrip('.').isdigit()]) == 6 and '(the first 3 of 6)' in printed
    with Image.open(out) as im: assert im.width <= 3 * 240


def test_eval_with_moved_images(corpus, tmp_path, capsys):
    "The run's data set with its images in another folder: --images alone points aair_eval there."
    run = _copy_run(corpus, tmp_path)
    moved = tmp_path/'moved'; shutil.copytree(corpus['img'], moved)
    cfg = json.loads((run/'run.json').read_text()); cfg['data']['images'] = str(tmp_path/'gone'); (run/'run.json').write_text(json.dumps(cfg))
    one_line_error(cli(eval_main, [run, '--quiet', '--out', tmp_path/'e.json'], capsys), 'aair_eval', 'gone', '--images')
    assert cli(eval_main, [run, '--images', moved, '--quiet', '--out', tmp_path/'e.json'], capsys) == (0, '')


@pytest.mark.parametrize('k, shown', [(1, 1), (3, 3), (5000, 8)])
def test_search_k(corpus, tmp_path, capsys, k, shown):
    "Any k from 1 up: at most the gallery (8 test images), the picture at most 10 wide."
    out = tmp_path/'s.png'
    assert cli(search_main, [corpus['run'], '--text', 'a red circle', '-k', k, '--out', out], capsys) == (0, '')
    printed = capsys.readouterr().out
    assert len([l for l in printed.splitlines() if l[:2].rstrip('.').isdigit()]) == shown
    with Image.open(out) as im: assert im.width <= 2400


def test_search_with_a_sixteen_bit_image(corpus, tmp_path, capsys):
    out = tmp_path/'s.png'
    assert cli(search_main, [corpus['run'], '--image', corpus['img']/'grey16.png', '-k', '2', '--out', out], capsys) == (0, '')
    assert out.exists()
