"""Train the toy model of tests/toy.py with a checkpoint after every step, and SIGKILL this process at the K-th
file-system operation of checkpointing (`python fault_run.py OUT K MODE`; MODE 'before': just before that operation,
'half': the operation's file is written, then cut to half its size, then the kill). K = 0 never kills. Prints each
operation as it starts, so the parent test knows where the kill landed. Used by tests/test_faults.py."""
import os, shutil, signal, sys
from pathlib import Path
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import aair_nb.train as T
from aair_nb.core import set_seed
from toy import PairSet, DualLinear

CFG = T.TrainConfig(epochs=2, batch_size=16, lr=1e-2, warmup=2, save_every=1, quiet=True)   # 3 steps per epoch
DATA = dict(n=48)

def main(out:Path, kill_at:int, mode:str):
    n = [0]
    def counted(f, name, target=None):
        def g(*args, **kw):
            n[0] += 1
            print(f"op {n[0]}: {name}", flush=True)
            if n[0] == kill_at:
                if mode == 'half' and target is not None:
                    f(*args, **kw); p = Path(target(args))
                    if p.is_file(): p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return f(*args, **kw)
        return g
    T.save_model = counted(T.save_model, 'save_model', lambda a: a[1])
    torch.save = counted(torch.save, 'torch.save', lambda a: a[1])
    os.replace = counted(os.replace, 'os.replace')
    shutil.rmtree = counted(shutil.rmtree, 'shutil.rmtree')
    torch.set_num_threads(1)
    set_seed(0)
    T.fit(DualLinear(), PairSet(**DATA), CFG, out)
    print("finished", flush=True)

if __name__ == '__main__': main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
