"Draws nbs/images/pipeline.png, the AAIR pipeline figure on the home page (run: python scripts/draw_pipeline.py)."
from pathlib import Path
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

BOXES = {  # name: (x, y, w, h, colour, label)
    'img':   (0.0, 3.0, 1.6, 0.8, '#dbe9f6', 'image\n(+ 2nd view)'),
    'txt':   (0.0, 0.6, 1.6, 0.8, '#fde4cf', 'caption'),
    'ienc':  (2.1, 3.0, 1.9, 0.8, '#9ecae1', 'image encoder\n(ViT / EffNet)'),
    'tenc':  (2.1, 0.6, 1.9, 0.8, '#fdae6b', 'text encoder\n(BERT / MiniLM)'),
    'igpo':  (4.6, 3.0, 1.7, 0.8, '#c6dbef', 'proj + GPO\nv  [B, d]'),
    'tgpo':  (4.6, 0.6, 1.7, 0.8, '#fdd0a2', 'proj + GPO\nt  [B, d]'),
    'mom':   (4.4, 1.85, 2.1, 0.7, '#e5e5e5', 'momentum copies\n+ queues'),
    'loss':  (7.0, 1.7, 2.1, 1.0, '#c7e9c0', 'ITC  IMS  LMIM\n(aligned globals)'),
    'fuse':  (7.0, 3.2, 2.1, 1.0, '#dadaeb', 'fusion encoder: text tokens\ncross-attend to image locals\n-> ITM score'),
    'rank':  (7.0, 0.2, 2.1, 0.9, '#f0f0f0', 'similarity matrix\n-> top-k -> R@K'),
}
ARROWS = [('img', 'ienc'), ('txt', 'tenc'), ('ienc', 'igpo'), ('tenc', 'tgpo'), ('igpo', 'loss'), ('tgpo', 'loss'),
          ('mom', 'loss'), ('igpo', 'rank'), ('tgpo', 'rank'), ]
CURVED = [('ienc', 't', 'fuse', 't', -0.25), ('rank', 'r', 'fuse', 'r', 0.6)]  # routed around the other boxes

def centre(b, side):
    x, y, w, h = BOXES[b][:4]
    return {'r': (x + w, y + h/2), 'l': (x, y + h/2), 't': (x + w/2, y + h), 'b': (x + w/2, y)}[side]

def main(out=Path(__file__).resolve().parents[1]/'nbs'/'images'/'pipeline.png'):
    fig, ax = plt.subplots(figsize=(10, 4.6))
    for x, y, w, h, c, label in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.05', fc=c, ec='#444'))
        ax.text(x + w/2, y + h/2, label, ha='center', va='center', fontsize=9)
    for a, b in ARROWS:
        ax.annotate('', centre(b, 'l'), centre(a, 'r'), arrowprops=dict(arrowstyle='->', color='#555', lw=1.2))
    for a, sa, b, sb, rad in CURVED:
        ax.annotate('', centre(b, sb), centre(a, sa), arrowprops=dict(arrowstyle='->', color='#555', lw=1.2, connectionstyle=f'arc3,rad={rad}'))
    ax.text(7.0, 2.88, 'stage 2: re-rank the top-k pairs', fontsize=8, color='#555')
    ax.text(7.0, -0.25, 'stage 1: index every item once', fontsize=8, color='#555')
    ax.set_xlim(-0.2, 9.9); ax.set_ylim(-0.4, 5.0); ax.axis('off')
    fig.tight_layout(); out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={'Software': None})
    print(out)

if __name__ == '__main__': main()
