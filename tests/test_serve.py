"The index and the search service with their real parts: FAISS, SQLite, uvicorn on loopback, a headless browser."
import json, shutil, subprocess, sys, threading, time, urllib.error, urllib.parse, urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

pytest.importorskip('fastapi'); pytest.importorskip('faiss')


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "A 2-step run on a small shapes set, indices of its test and val splits, and the service on loopback."
    from aair_nb.cli import run_train
    from aair_nb.index import build_index, Searcher
    from aair_nb.serve import make_app, BackgroundServer
    from aair_nb.shapes import make_shapes
    work = tmp_path_factory.mktemp('serve')
    data = make_shapes(work/'shapes', 16, 8, 8, seed=3)
    run_train(['--out', str(work/'run'), '--max-steps', '2', '--batch-size', '8', '--rerank-k', '0', '--quiet', '--data', str(data)])
    test_idx = build_index(work/'run', work/'test_index', progress=False)
    val_idx = build_index(work/'run', work/'val_index', splits=('val',), progress=False)
    searcher = Searcher(test_idx)
    with BackgroundServer(make_app(searcher)) as url:
        yield dict(url=url, searcher=searcher, test=test_idx, val=val_idx, work=work)


def call(url, body=None, content_type='application/json'):
    "(status, JSON) of a GET, or of a POST when `body` is given."
    req = urllib.request.Request(url, data=body, headers={'Content-Type': content_type} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r: return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e: return e.code, json.loads(e.read())


def upload(url, name, data, mime):
    b = 'xyzboundary'
    body = f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: {mime}\r\n\r\n'.encode() + data + f'\r\n--{b}--\r\n'.encode()
    return call(url, body, f'multipart/form-data; boundary={b}')


def swap(url, path):
    assert call(f"{url}/api/index/swap", json.dumps(dict(path=str(path))).encode())[0] == 202
    t0 = time.time()
    while (st := call(f"{url}/health")[1]['swap'])['status'] == 'loading':
        assert time.time() - t0 < 60, "the swap never finished"
        time.sleep(.05)
    return st


def test_search_endpoints(served):
    url, s = served['url'], served['searcher']
    q = s.index.store.get('captions', [3])[0]['text']
    status, ans = call(f"{url}/api/search/text?q={urllib.parse.quote(q)}&k=4")
    assert status == 200 and [h['id'] for h in ans['hits']] == [h['id'] for h in s.by_text(q, 4)['hits']]
    f = s.index.store.get('images', [1])[0]['file']
    status, ans = upload(f"{url}/api/search/image?k=3", 'q.png', Path(f).read_bytes(), 'image/png')
    assert status == 200 and len(ans['hits']) == 3 and all('text' in h for h in ans['hits'])
    status, ans = call(f"{url}/api/search/item/captions/3?k=4")
    assert status == 200 and ans['query']['id'] == 3 and [h['id'] for h in ans['hits']] == [h['id'] for h in s.by_text(q, 4)['hits']]
    with urllib.request.urlopen(f"{url}/api/image/0", timeout=30) as r: assert r.headers['content-type'] == 'image/png'
    with urllib.request.urlopen(f"{url}/", timeout=30) as r: assert b'id="q"' in r.read()


@pytest.mark.parametrize('what,expect', [('text?q=%20', 400), ('text?q=a&k=0', 400), ('text?q=a&k=101', 400), ('text?q=a&rerank_k=-1', 400),
                                          ('text?q=a&k=ten', 422), ('text?q=' + 'a' * 1001, 400), ('item/images/9999', 404), ('item/videos/1', 404)])
def test_bad_queries(served, what, expect):
    status, body = call(f"{served['url']}/api/search/{what}")
    assert status == expect and body['status'] == expect and body['error']


def test_bad_uploads(served):
    from aair_nb.serve import MAX_UPLOAD
    url = served['url']
    status, body = upload(f"{url}/api/search/image", 'notes.txt', b'plain words', 'text/plain')
    assert status == 415 and 'notes.txt: not an image' in body['error']
    status, body = upload(f"{url}/api/search/image", 'big.png', b'0' * (MAX_UPLOAD + 1), 'image/png')
    assert status == 413 and 'big.png' in body['error']
    status, body = call(f"{url}/api/search/image", b'', 'multipart/form-data; boundary=xyzboundary')
    assert 400 <= status < 500, (status, body)


def test_hot_swap_under_load(served):
    "Clients query while the index is swapped (and once fails to swap): no request fails, no answer mixes two indices."
    url, test_idx, val_idx = served['url'], served['test'], served['val']
    q = urllib.parse.quote(served['searcher'].index.store.get('captions', [0])[0]['text'])
    answers, stop = [], threading.Event()
    def client():
        for _ in range(200):                                          # bounded: stops by itself
            if stop.is_set(): break
            status, body = call(f"{url}/api/search/text?q={q}&k=5")
            answers.append((status, Path(body.get('index', '?')).name, {h['split'] for h in body.get('hits', [])}))
    with ThreadPoolExecutor(4) as pool:
        fs = [pool.submit(client) for _ in range(4)]
        results = [swap(url, val_idx), swap(url, served['work']/'nowhere'), swap(url, test_idx), swap(url, val_idx), swap(url, test_idx)]
        stop.set()
        for f in fs: f.result()
    assert [r['status'] for r in results] == ['done', 'failed', 'done', 'done', 'done']
    assert 'not an index folder' in results[1]['error']
    assert answers and {a[0] for a in answers} == {200}
    assert {a[1] for a in answers} <= {'test_index', 'val_index'}
    assert all(splits == {name.split('_')[0]} for _, name, splits in answers), "an answer's hits came from another index than the one it names"
    assert call(f"{url}/health")[1]['index'] == str(test_idx.resolve())


def test_swap_refuses_another_models_index(served, tmp_path):
    url = served['url']
    other = tmp_path/'other'
    shutil.copytree(served['val'], other)
    info = json.loads((other/'index.json').read_text()); info['digest'] = 'f' * 16
    (other/'index.json').write_text(json.dumps(info))
    st = swap(url, other)
    assert st['status'] == 'failed' and 'other model weights' in st['error']
    assert call(f"{url}/health")[1]['index'] == str(served['test'].resolve())      # the old index stays


def test_browser_types_a_query(served):
    "Headless Chromium types a caption into the page and presses Enter; the gallery shows the service's images, in its order."
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    if exe is None: pytest.skip("headless Chromium not found: `apt-get install chromium` (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright
    url, s = served['url'], served['searcher']
    q = s.index.store.get('captions', [5])[0]['text']
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=['--no-sandbox', '--disable-gpu'])
        try:
            page = browser.new_page()
            page.goto(url + '/')
            page.fill('#q', q); page.fill('#k', '5'); page.press('#q', 'Enter')
            page.wait_for_selector('#gallery figure', timeout=30000)
            srcs = page.eval_on_selector_all('#gallery img', 'els => els.map(e => e.getAttribute("src"))')
            loaded = page.eval_on_selector_all('#gallery img', 'els => Promise.all(els.map(e => e.decode().then(() => e.naturalWidth)))')
            page.fill('#q', ' '); page.press('#q', 'Enter')
            page.wait_for_selector('#status.error', timeout=30000)
            err = page.text_content('#status')
        finally: browser.close()
    assert srcs == [f"/api/image/{h['id']}" for h in s.by_text(q, 5)['hits']]
    assert all(w > 0 for w in loaded)                                            # the images really arrived
    assert 'q is empty' in err


def test_index_command_line(served, tmp_path):
    "aair_index build / add / search / info as installed console scripts."
    exe = Path(sys.executable).parent/'aair_index'
    run = served['work']/'run'
    r = subprocess.run([str(exe), 'build', str(run), '--out', str(tmp_path/'ix'), '--quiet', '--kind', 'hnsw'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'images (hnsw)' in r.stdout
    r = subprocess.run([str(exe), 'add', str(tmp_path/'ix'), '--split', 'val', '--quiet'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path/'ix'/'index.json').read_text())
    assert info['collections']['images']['n'] == 16 and [s['split'] for s in info['sources']] == ['test', 'val']
    r = subprocess.run([str(exe), 'search', str(tmp_path/'ix'), '--item', 'captions:0', '-k', '2', '--json'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)['hits']) == 2
    r = subprocess.run([str(exe), 'search', str(tmp_path/'nope'), '--text', 'a'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and 'not an index folder' in r.stderr and 'Traceback' not in r.stderr
