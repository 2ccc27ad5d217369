import os
from pathlib import Path
import pytest

os.environ.setdefault('IN_TEST', '1')          # library code shrinks its work as under nbdev_test
os.environ.setdefault('HF_HUB_OFFLINE', '1')   # never reach a model hub from the tests
ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='session')
def root(): return ROOT
