__version__ = "0.1.0"

import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto falls back to text progress bars where ipywidgets is absent
