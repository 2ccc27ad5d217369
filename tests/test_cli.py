"The console scripts are installed and explain themselves."
import shutil, subprocess, sys
from pathlib import Path
import pytest

@pytest.mark.parametrize('cmd,flags', [('aair_train', ['--model', '--preset', '--data', '--resume', '--set', '--rerank-k', 'vsepp']),
                                       ('aair_eval', ['--checkpoint', '--split', '--rerank-k']),
                                       ('aair_search', ['--text', '--image', '--split'])])
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
