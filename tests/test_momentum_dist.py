"""aair_nb.momentum across processes: a real two-process gloo group started with torch.multiprocessing spawn.
Each rank enqueues its own features (unequal batch sizes, a queue size that divides nothing); afterwards the queue of
every rank holds the features of both ranks, in rank order, identical on both ranks. Skips when no gloo group can be
started on this machine."""
import socket
from collections import deque
from datetime import timedelta
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD, K, DIM, STEPS = 2, 7, 3, 4

def _batch(rank:int, step:int) -> tuple[torch.Tensor, torch.Tensor]:
    "The rows rank `rank` enqueues at `step`: 3 rows on rank 0, 2 on rank 1; ids encode (step, rank, row)."
    n = 3 - rank
    ids = 100 * step + 10 * rank + torch.arange(n)
    return ids[:, None].float().repeat(1, DIM) + 0.5, ids                 # feats [n, DIM] (recognisable), ids [n]

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _worker(rank:int, port:int, out:str):
    try: dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=WORLD,
                                 timeout=timedelta(seconds=60))
    except Exception as e:
        (Path(out)/f'skip{rank}').write_text(repr(e)); return
    try:
        from aair_nb.momentum import FeatureQueue, concat_all_gather
        gathered = concat_all_gather(torch.full((rank + 1, 2), float(rank)))  # rank 0: 1 row, rank 1: 2 rows
        q, snapshots = FeatureQueue(DIM, K), []
        for step in range(STEPS):
            q.enqueue(*_batch(rank, step))
            snapshots.append(tuple(t.clone() for t in q.get()))
        torch.save({'gathered': gathered, 'snapshots': snapshots, 'ptr': int(q.ptr)}, Path(out)/f'rank{rank}.pt')
    finally: dist.destroy_process_group()

def test_queue_gathers_across_two_processes(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available(): pytest.skip('torch.distributed with gloo is not available')
    try: mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    except mp.ProcessExitedException as e: pytest.skip(f'could not start two processes: {e}')
    skips = sorted(tmp_path.glob('skip*'))
    if skips: pytest.skip(f'no gloo process group here: {skips[0].read_text()[:300]}')
    res = [torch.load(tmp_path/f'rank{r}.pt') for r in range(WORLD)]

    # concat_all_gather: rank order, unequal sizes, the same result on every rank
    expected = torch.tensor([[0., 0.], [1., 1.], [1., 1.]])
    for r in res: assert torch.equal(r['gathered'], expected)

    # reference: one deque fed with rank 0's batch, then rank 1's, at every step
    ref, total = deque(maxlen=K), 0
    for step in range(STEPS):
        for rank in range(WORLD):
            f, i = _batch(rank, step); ref.extend(zip(i.tolist(), f)); total += len(i)
        for r in res:
            feats, ids = r['snapshots'][step]
            assert ids.tolist() == [y for y, _ in ref], (step, ids.tolist())
            assert torch.equal(feats, torch.stack([x for _, x in ref]))
        last_ids = res[0]['snapshots'][step][1]
        assert {int(y) // 10 % 10 for y in last_ids} == {0, 1}, 'both ranks must be in the queue'
    for r in res: assert r['ptr'] == total % K
