"""LRA-diffusion: learning from noisy labels with label-retrieval-augmented diffusion.

>>> from lra_diffusion import LRAClassifier, Config          # doctest: +SKIP
>>> clf = LRAClassifier(random_state=0).fit(X, y_noisy)       # doctest: +SKIP
>>> result = run("photos/", labels="labels.txt", encoder="kmeans", out="runs/a")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .config import Config  # noqa: E402
from .errors import InputError  # noqa: E402
from .estimator import LRAClassifier  # noqa: E402
from .pipeline import RunResult, run  # noqa: E402

__all__ = ["Config", "InputError", "LRAClassifier", "RunResult", "__version__", "run"]
