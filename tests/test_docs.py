"""The built site (scripts/build_docs.py -> _docs/) opened in headless Chromium: every page loads, has a body,
its in-site links resolve, and pages whose notebook made a plot show an image. Screenshots go to _docs/_screenshots/."""
import json, os, re, shutil, subprocess, sys, tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse, unquote
import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE, PROC = ROOT/'_docs', ROOT/'_proc'

def _chromium():
    exe = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if exe is None:
        msg = "headless Chromium not found: `apt-get install chromium` (scripts/test.sh installs it)"
        if os.environ.get('CI'): pytest.fail(msg)
        pytest.skip(msg)
    return exe

@pytest.fixture(scope='module')
def site():
    if not (SITE/'index.html').exists() or not PROC.exists():
        subprocess.run([sys.executable, str(ROOT/'scripts'/'build_docs.py')], cwd=ROOT, check=True)
    return SITE

def _browse(exe, page:Path, shot:Path) -> str:
    "Render `page` headless: return the DOM after scripts ran, and write a screenshot."
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
             '--disable-sync', '--no-first-run', '--disable-quic', '--hide-scrollbars', '--window-size=1280,1600']
    with tempfile.TemporaryDirectory() as prof:
        url = page.as_uri()
        dom = subprocess.run([exe, *flags, f'--user-data-dir={prof}', '--virtual-time-budget=3000', '--dump-dom', url],
                             capture_output=True, text=True, timeout=120).stdout
        subprocess.run([exe, *flags, f'--user-data-dir={prof}', f'--screenshot={shot}', url], capture_output=True, timeout=120)
    return dom

class _Links(HTMLParser):
    def __init__(self):
        super().__init__(); self.links, self.imgs, self.text = [], [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag == 'img' and a.get('src'): self.imgs.append(a['src'])
    def handle_data(self, data): self.text.append(data)

def _made_plot(nb:Path) -> bool:
    cells = json.loads(nb.read_text())['cells']
    return any('image/png' in o.get('data', {}) for c in cells for o in c.get('outputs', []))

def _pages():
    nbs = sorted(p.relative_to(ROOT/'nbs') for p in (ROOT/'nbs').rglob('*.ipynb')
                 if not any(part.startswith(('_', '.')) for part in p.relative_to(ROOT/'nbs').parts))
    return [str(p) for p in nbs]

_DRAWS = re.compile(r'\bplt\.|\.plot\(|\bplot_\w+\(|\bshow_\w+\(|\bfailure_cases\(')

def test_executed_notebooks_kept_their_plots():
    "A notebook executed with a non-inline matplotlib backend (e.g. MPLBACKEND=Agg) saves its text but none of its figures."
    lost = []
    for nb in _pages():
        cells = json.loads((ROOT/'nbs'/nb).read_text())['cells']
        code = [c for c in cells if c['cell_type'] == 'code' and not ''.join(c['source']).startswith('#| export')]
        executed = any(c.get('outputs') for c in code)
        draws = any(_DRAWS.search(''.join(c['source'])) for c in code)
        if executed and draws and not _made_plot(ROOT/'nbs'/nb): lost.append(nb)
    assert not lost, f"executed, but no figure in their outputs (re-run them with the inline backend): {lost}"

def test_every_notebook_has_a_page(site):
    missing = [nb for nb in _pages() if not (site/Path(nb).with_suffix('.html')).exists()]
    assert not missing, f"notebooks without a page in _docs/: {missing}"

def test_sidebar_lists_notebooks_in_order(site):
    html = (site/'index.html').read_text()
    order = [p for p in _pages() if re.match(r'\d\d_', p)]
    pos = [html.find(f'href="{Path(p).with_suffix(".html")}"') for p in order]
    assert all(i >= 0 for i in pos), f"sidebar misses some of {order}"
    assert pos == sorted(pos), "sidebar is not in notebook order"

@pytest.mark.parametrize('nb', _pages())
def test_page_in_browser(site, nb):
    exe = _chromium()
    page = site/Path(nb).with_suffix('.html')
    shots = site/'_screenshots'; shots.mkdir(exist_ok=True)
    dom = _browse(exe, page, shots/(Path(nb).stem + '.png'))
    p = _Links(); p.feed(dom)
    body = ' '.join(' '.join(p.text).split())
    assert len(body) > 200, f"{page.name}: empty body in the browser"
    assert 'Traceback' not in body or 'test_fail' in body, f"{page.name}: shows a traceback"
    broken = []
    for href in p.links:
        u = urlparse(href)
        if u.scheme not in ('', 'file') or href.startswith('#'): continue
        target = Path(unquote(u.path)) if u.scheme == 'file' else (page.parent/unquote(u.path)).resolve()
        if not target.exists(): broken.append(href)
    assert not broken, f"{page.name}: broken in-site links {broken}"
    if _made_plot(PROC/nb):
        assert any(s.startswith('data:image/png') or s.endswith('.png') for s in p.imgs), f"{page.name}: its notebook made a plot but the page shows no image"
    assert (shots/(Path(nb).stem + '.png')).stat().st_size > 10_000

def test_readme_in_sync(site):
    sys.path.insert(0, str(ROOT/'scripts'))
    from build_docs import readme_text
    assert (ROOT/'README.md').read_text() == readme_text(PROC), \
        "README.md differs from nbs/index.ipynb: run `python scripts/build_docs.py --readme` and commit"
