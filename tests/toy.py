"""The toy problem the trainer tests run on (the same as in nbs/14_train.ipynb): synthetic image/text feature pairs and
a linear dual encoder with dropout and a learned temperature. Every training run on it takes a fraction of a second.
Imported by tests/test_train.py and by the script it starts under torchrun."""
import math
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from aair_nb.core import l2norm

class PairSet(Dataset):
    "Image/text features: noisy linear views of one latent; every read adds fresh noise (an augmentation)."
    def __init__(self, n=96, d_lat=8, d_img=24, d_txt=16, noise=0.3, seed=0):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, d_lat, generator=g)
        self.x, self.y = z @ torch.randn(d_lat, d_img, generator=g), z @ torch.randn(d_lat, d_txt, generator=g)
        self.noise = noise
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {'x': self.x[i] + self.noise * torch.randn_like(self.x[i]), 'y': self.y[i], 'image_ids': i}

class DualLinear(nn.Module):
    "Linear dual encoder with dropout and a learned temperature; symmetric InfoNCE."
    def __init__(self, d_img=24, d_txt=16, d=16, p_drop=0.1):
        super().__init__()
        self.img, self.txt, self.drop = nn.Linear(d_img, d), nn.Linear(d_txt, d), nn.Dropout(p_drop)
        self.log_tau = nn.Parameter(torch.tensor(math.log(0.1)))
    def forward(self, batch):
        v, t = l2norm(self.img(self.drop(batch['x']))), l2norm(self.txt(self.drop(batch['y'])))
        logits = v @ t.T / self.log_tau.exp()
        tgt = torch.arange(len(v), device=v.device)
        i2t, t2i = F.cross_entropy(logits, tgt), F.cross_entropy(logits.T, tgt)
        return {'i2t': i2t, 't2i': t2i, 'loss': (i2t + t2i) / 2}
