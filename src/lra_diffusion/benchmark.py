"""Benchmark harness: LRA-diffusion against baselines on the *same* features and noisy labels.

Baselines (all model-selected on the same validation split as LRA-diffusion):

- ``linear``: softmax regression (cross-entropy linear head), L2 chosen on the validation split;
- ``mlp``: a 2-layer MLP head (hidden 512, ReLU) trained with cross-entropy, best epoch on validation;
- ``knn``: a k-NN vote (k=10);
- ``cleanlab``: cleanlab's ``CleanLearning`` around the softmax regression (needs the ``bench`` extra);
- ``ceiling``: the linear and MLP heads trained on the *clean* labels (the better one is reported).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.neighbors import KNeighborsClassifier

from . import __version__
from .features import float_tensor
from .io import write_json
from .models import fit_softmax_regression


@dataclass
class Split:
    """Features and labels of one benchmark setting (noisy train, validation, clean test)."""

    X_train: np.ndarray
    y_train: np.ndarray  # noisy
    y_train_clean: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray  # clean (paper protocol) or noisy (held-out slice)
    X_test: np.ndarray
    y_test: np.ndarray
    val_is_clean: bool


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression fitted by full-batch L-BFGS in torch (fast on 2 cores).

    Parameters
    ----------
    l2 : weight of 0.5 * ||W||^2 / N added to the mean cross-entropy.
    max_iter : L-BFGS iterations.
    """

    def __init__(self, *, l2: float = 1e-3, max_iter: int = 200):
        self.l2 = l2
        self.max_iter = max_iter

    def fit(self, X, y, sample_weight=None):
        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        X = float_tensor(X)
        self.mean_, self.std_ = X.mean(0), X.std(0).clamp_min(1e-6)
        Xs = (X - self.mean_) / self.std_
        C = max(len(self.classes_), 2)
        self.W_, self.b_ = fit_softmax_regression(Xs, torch.as_tensor(y_idx), C, l2=self.l2, max_iter=self.max_iter)
        return self

    def predict_proba(self, X):
        with torch.no_grad():
            X = (float_tensor(X) - self.mean_) / self.std_
            p = torch.softmax(X @ self.W_ + self.b_, dim=1).numpy()
        return p[:, : len(self.classes_)]

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(1)]


def fit_linear(split: Split, y: np.ndarray, l2_grid=(1e-4, 1e-3, 1e-2, 1e-1)) -> tuple[SoftmaxRegression, float]:
    """Softmax regression with L2 chosen on the validation split. Returns (model, val accuracy)."""
    best = None
    for l2 in l2_grid:
        m = SoftmaxRegression(l2=l2).fit(split.X_train, y)
        acc = m.score(split.X_val, split.y_val)
        if best is None or acc > best[1]:
            best = (m, acc)
    return best


def fit_mlp(split: Split, y: np.ndarray, *, hidden: int = 512, epochs: int = 30, seed: int = 0) -> tuple[Callable, float]:
    """2-layer MLP head with cross-entropy; the epoch with the best validation accuracy is kept."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    X = torch.as_tensor(split.X_train, dtype=torch.float32)
    mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
    Xs = (X - mean) / std
    Xv = (torch.as_tensor(split.X_val, dtype=torch.float32) - mean) / std
    yt = torch.as_tensor(y, dtype=torch.int64)
    C = int(max(y.max(), split.y_val.max(), split.y_test.max())) + 1
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, C))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    best_state, best_acc = None, -1.0
    for _ in range(epochs):
        perm = torch.randperm(len(Xs), generator=g)
        for i in range(0, len(perm), 256):
            idx = perm[i : i + 256]
            loss = torch.nn.functional.cross_entropy(net(Xs[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float((net(Xv).argmax(1).numpy() == split.y_val).mean())
        if acc > best_acc:
            best_acc, best_state = acc, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)

    def predict(Xq: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net((torch.as_tensor(Xq, dtype=torch.float32) - mean) / std).argmax(1).numpy()

    return predict, best_acc


def run_baselines(split: Split, *, seed: int = 0, methods=("linear", "mlp", "knn", "cleanlab", "ceiling")) -> dict:
    """Test accuracy and seconds of each baseline on ``split``."""
    out: dict[str, dict] = {}

    def record(name, fn):
        start = time.perf_counter()
        acc = fn()
        out[name] = {"test_accuracy": float(acc), "seconds": time.perf_counter() - start}

    if "linear" in methods:
        record("linear", lambda: fit_linear(split, split.y_train)[0].score(split.X_test, split.y_test))
    if "mlp" in methods:
        record("mlp", lambda: (fit_mlp(split, split.y_train, seed=seed)[0](split.X_test) == split.y_test).mean())
    if "knn" in methods:
        record("knn", lambda: KNeighborsClassifier(10).fit(split.X_train, split.y_train).score(split.X_test, split.y_test))
    if "cleanlab" in methods:
        def cleanlab_fit():
            from cleanlab.classification import CleanLearning

            l2 = fit_linear(split, split.y_train)[0].l2
            # n_jobs=1: cleanlab's own process pool relies on fork-inherited globals and fails inside the
            # benchmark's spawned workers; the result does not depend on it
            cl = CleanLearning(SoftmaxRegression(l2=l2), cv_n_folds=3, seed=seed, verbose=False,
                               find_label_issues_kwargs={"n_jobs": 1})
            return cl.fit(split.X_train, split.y_train).score(split.X_test, split.y_test)

        record("cleanlab", cleanlab_fit)
    if "ceiling" in methods:
        clean_val = split.y_val if split.val_is_clean else None
        ceiling_split = Split(split.X_train, split.y_train_clean, split.y_train_clean, split.X_val,
                              clean_val if clean_val is not None else split.y_val, split.X_test, split.y_test, True)
        record("ceiling_linear", lambda: fit_linear(ceiling_split, split.y_train_clean)[0].score(split.X_test, split.y_test))
        record("ceiling_mlp", lambda: (fit_mlp(ceiling_split, split.y_train_clean, seed=seed)[0](split.X_test)
                                        == split.y_test).mean())
    return out


def run_lra(split: Split, *, config, seed: int = 0, verbose: bool = False, return_model: bool = False):
    """Fit LRA-diffusion on ``split``; test accuracy, seconds and retrieval diagnostics.

    With ``return_model`` also returns the fitted estimator: ``(record, estimator)``.
    """
    from .estimator import LRAClassifier

    start = time.perf_counter()
    est = LRAClassifier(config=config, random_state=seed, verbose=verbose)
    est.fit(split.X_train, split.y_train, X_val=split.X_val, y_val=split.y_val)
    seconds = time.perf_counter() - start
    res = est.train_result_
    # retrieval diagnostics of the kept fit's draws (its own label alone where k = 0 was kept): how often a
    # drawn label is clean, the accuracy of the draws' majority vote, and how often it mends a wrong label
    cand = np.concatenate([split.y_train[:, None], split.y_train[res.neighbours]], axis=1)
    votes = np.zeros((len(cand), int(max(cand.max(), split.y_train_clean.max())) + 1))
    np.add.at(votes, (np.arange(len(cand))[:, None], cand), 1)
    vote, wrong = votes.argmax(1), split.y_train != split.y_train_clean
    record = {
        "test_accuracy": float(est.score(split.X_test, split.y_test)),
        "seconds": seconds,
        "best_epoch": res.best_epoch,
        "epochs": res.epochs,
        "best_val_accuracy": res.best_val_accuracy,
        "retrieval_clean_draw_fraction": float((cand == split.y_train_clean[:, None]).mean()),
        "retrieval_vote_accuracy": float((vote == split.y_train_clean).mean()),
        "retrieval_vote_recovers_wrong": (float((vote[wrong] == split.y_train_clean[wrong]).mean())
                                          if wrong.any() else None),
        "train_noise_rate": float(wrong.mean()),
        # what the defaults chose: the kept k (0 where the k check's second fit won), the prior, the check,
        # the selected candidate
        "fit_info": {key: est.fit_info_[key] for key in ("retrieval_k", "prior", "k_rule", "k_selection", "k_at_start",
                                                         "selection") if key in est.fit_info_},
    }
    return (record, est) if return_model else record


def environment() -> dict:
    """The versions and machine a benchmark result was measured with (stored beside every result)."""
    import sklearn

    return {"lra_diffusion": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "threads": torch.get_num_threads()}


def write_result(path: Path, payload: dict) -> None:
    """Write one benchmark result to ``path`` as strict JSON, with :func:`environment` and today's date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**payload, "environment": environment(), "date": time.strftime("%Y-%m-%d")})


def read_results(folder: Path) -> list[dict]:
    """Every result (``*.json``) in ``folder``, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def replace_section(markdown: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (append if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = markdown.read_text() if markdown.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    markdown.write_text(text)


# ---- CIFAR-10 on the shared copy -------------------------------------------------------------------
CIFAR10_SETTINGS: dict[str, tuple[str, str]] = {
    "pmd-0.35": ("pmd", "cifar10-1-0.35.npy"),
    "pmd-0.70": ("pmd", "cifar10-1-0.70.npy"),
    "pmd-0.35-U-0.3": ("pmd", "cifar10-1-0.35_U_0.3.npy"),
    "pmd-0.35-U-0.6": ("pmd", "cifar10-1-0.35_U_0.6.npy"),
    "pmd-0.35-A-0.3": ("pmd", "cifar10-1-0.35_A_0.3.npy"),
    "c10n-aggre": ("cifar10n", "aggre"),
    "c10n-random1": ("cifar10n", "random1"),
    "c10n-worse": ("cifar10n", "worse"),
}


def cifar10_split(setting: str, train_features: np.ndarray, test_features: np.ndarray, shared_root: Path,
                  *, holdout: int = 5000, seed: int = 0) -> Split:
    """The paper's protocol for PMD files; for CIFAR-10N all 50,000 with a held-out *noisy* slice."""
    from .data import load_cifar_n, load_pmd_labels
    from .data.cifar import read_index_csv

    kind, name = CIFAR10_SETTINGS[setting]
    _, clean = read_index_csv(shared_root / "train.csv")
    _, test_labels = read_index_csv(shared_root / "test.csv")
    if kind == "pmd":
        noisy = load_pmd_labels(shared_root / "noisy_labels" / "pmd" / name)
        n = len(noisy)
        return Split(train_features[:n], noisy, clean[:n], train_features[n:], clean[n:], test_features,
                     test_labels, val_is_clean=True)
    noisy = load_cifar_n(shared_root / "noisy_labels" / "cifar10n.csv", name)
    perm = np.random.default_rng(seed).permutation(len(noisy))
    val, tr = np.sort(perm[:holdout]), np.sort(perm[holdout:])
    return Split(train_features[tr], noisy[tr], clean[tr], train_features[val], noisy[val], test_features,
                 test_labels, val_is_clean=False)


# Reported by the paper (Chen et al. 2023, CLIP ViT-L/14 variant); only the figures ../shared/METHOD.md
# confirms are listed, the rest are left blank rather than guessed.
PAPER_CIFAR10 = {"pmd-0.35": 96.54}

# LRA-diffusion settings for CIFAR-sized feature sets on a 2-core CPU
CIFAR10_LRA_CONFIG = {"train": {"epochs": 30, "batch_size": 256}, "retrieval": {"k": 10}}


def cifar10_features(encoder_name: str, shared_root: Path, cache_dir: Path, *, progress: bool = True,
                     options: dict | None = None):
    """(train (50000, D), test (10000, D)) features of the shared CIFAR-10, through the feature cache;
    ``options``: the encoder's keyword options."""
    from .data import load_shared_cifar10
    from .encoders import embed, fit_cached, get_encoder

    train_images, _ = load_shared_cifar10(shared_root, "train")
    test_images, _ = load_shared_cifar10(shared_root, "test")
    encoder = fit_cached(get_encoder(encoder_name, **(options or {})), train_images, cache_dir=cache_dir,
                         progress=progress)
    kw = {"cache_dir": cache_dir, "dataset": "shared-cifar10", "progress": progress}
    return (np.asarray(embed(encoder, train_images, split="train", **kw), dtype=np.float32),
            np.asarray(embed(encoder, test_images, split="test", **kw), dtype=np.float32))


NOISY_BASELINES = ("linear", "mlp", "knn", "cleanlab")


def _setting_task(kind: str, setting: str, seed: int, config: dict, features=None,
                  shared_root: Path | None = None) -> dict:
    """One unit of benchmark work: ``lra`` (LRA only), ``noisy`` (LRA + the noisy-label baselines) or
    ``ceiling`` (the clean-label heads). Without ``features`` it uses the worker's (see ``_init_worker``)."""
    from .config import Config

    if features is None:
        features, shared_root = _WORKER["features"], _WORKER["shared_root"]
    split = cifar10_split(setting, *features, shared_root, seed=seed)
    if kind == "ceiling":
        return run_baselines(split, seed=seed, methods=("ceiling",))
    cfg = Config.from_dict(config)
    record = {"setting": setting, "seed": seed, "config": cfg.to_dict(),
              "noise_rate": float((split.y_train != split.y_train_clean).mean()),
              "n_train": len(split.y_train), "feature_dim": int(split.X_train.shape[1]),
              "val": "clean" if split.val_is_clean else "noisy held-out slice",
              "lra": run_lra(split, config=cfg, seed=seed)}
    if kind == "noisy":
        record["baselines"] = run_baselines(split, seed=seed, methods=NOISY_BASELINES)
    return record


def ceiling_key(setting: str, seed: int) -> tuple:
    """Settings whose clean-label ceiling is the same computation share this key: same training rows,
    same validation labels for model selection (all PMD files; each CIFAR-10N column has its own noisy
    validation labels), same seed."""
    return ("pmd", seed) if CIFAR10_SETTINGS[setting][0] == "pmd" else (setting, seed)


_WORKER: dict = {}


def _init_worker(train_path: str, test_path: str, shared_root: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(features=(np.load(train_path), np.load(test_path)),
                   shared_root=shared_root)


def _run_tasks(tasks: list[tuple], features, shared_root: Path, jobs: int, on_done: Callable) -> None:
    """Run ``(kind, setting, seed, config)`` tasks, in this process or in ``jobs`` worker processes
    (one torch thread each; results are identical to a one-thread run in this process)."""
    if jobs <= 1:
        for task in tasks:
            on_done(task, _setting_task(*task, features, shared_root))
        return
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with tempfile.TemporaryDirectory(prefix="lra-bench-") as tmp:
        paths = [str(Path(tmp) / f"{name}.npy") for name in ("train", "test")]
        for path, array in zip(paths, features):
            np.save(path, np.ascontiguousarray(array, dtype=np.float32))
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=(*paths, shared_root, 1)) as pool:
            futures = {pool.submit(_setting_task, *task): task for task in tasks}
            try:
                for future in as_completed(futures):
                    on_done(futures[future], future.result())
            except BaseException:
                for future in futures:  # fail now, not after every queued setting has run
                    future.cancel()
                raise


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def cifar10_table(results: list[dict], encoder: str) -> str:
    """Markdown main table: medians over seeds per setting."""
    rows = []
    head = ("| setting | noise | seeds | LRA-diffusion | linear | MLP | 10-NN | cleanlab | clean ceiling "
            "| LRA / ceiling | clean draws | LRA min | paper (CLIP) |")
    rows.append(head)
    rows.append("|" + "---|" * (head.count("|") - 1))
    for setting in CIFAR10_SETTINGS:
        rs = [r for r in results if r.get("setting") == setting and "baselines" in r]
        if not rs:
            continue
        lra = _median([r["lra"]["test_accuracy"] for r in rs])
        base = {m: _median([r["baselines"].get(m, {}).get("test_accuracy") for r in rs])
                for m in ("linear", "mlp", "knn", "cleanlab", "ceiling_linear", "ceiling_mlp")}
        ceiling = max(v for k, v in base.items() if k.startswith("ceiling") and v is not None)
        best_base = max(base[m] for m in ("linear", "mlp", "knn", "cleanlab") if base[m] is not None)
        mark = "**" if lra >= best_base else ""
        paper = PAPER_CIFAR10.get(setting)
        rows.append(
            f"| {setting} | {_median([r['noise_rate'] for r in rs]):.1%} | {len(rs)} | {mark}{lra:.2%}{mark} | "
            + " | ".join(f"{base[m]:.2%}" if base[m] is not None else "-" for m in ("linear", "mlp", "knn", "cleanlab"))
            + f" | {ceiling:.2%} | {lra / ceiling:.3f} | "
            f"{_median([r['lra']['retrieval_clean_draw_fraction'] for r in rs]):.1%} | "
            f"{min(r['lra']['test_accuracy'] for r in rs):.2%} | {f'{paper:.2f}%' if paper else '-'} |"
        )
    return "\n".join(rows)


def reduce_features(train: np.ndarray, test: np.ndarray, dim: int | None, *, seed: int = 0, l2: bool = False):
    """PCA to ``dim`` components fitted on the (unlabelled) training features; identity when None.
    ``l2``: then scale every row to unit length (the EfficientNet-Lite rows' protocol)."""
    if dim is not None and dim < train.shape[1]:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=dim, svd_solver="randomized", random_state=seed).fit(train)
        train, test = pca.transform(train).astype(np.float32), pca.transform(test).astype(np.float32)
    if l2:
        train, test = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (train, test))
    return train, test


def cifar10_main(*, encoder: str, seeds: list[int], settings: list[str], shared_root: Path, cache_dir: Path,
                 results_dir: Path, markdown: Path, config: dict | None = None, pca: int | None = 512,
                 ablations: bool = False, variants: list[str] | None = None, table_only: bool = False,
                 jobs: int = 1, verbose: bool = True, l2: bool = False) -> None:
    """Embed once, run every (setting, seed), write one JSON per run, regenerate the main table.

    ``pca``: the features every method sees are the encoder's, reduced by PCA to this many dimensions
    (fitted on the unlabelled training images' features), so that a 2-core CPU can afford them;
    ``l2``: rows scaled to unit length after it.
    ``jobs``: worker processes (one torch thread each) that run settings side by side.
    """
    from .errors import InputError

    unknown = set(settings) - set(CIFAR10_SETTINGS)
    if unknown:
        raise InputError(f"unknown setting(s) {sorted(unknown)}; valid: {list(CIFAR10_SETTINGS)}")
    out_dir = results_dir / encoder
    if table_only:
        results = [r for r in read_results(out_dir) if r.get("encoder") == encoder]
        replace_section(markdown, f"cifar10-main-{encoder}", cifar10_table(results, encoder))
        print(f"table of {len(results)} results written to {markdown}")
        return
    start = time.perf_counter()
    features = cifar10_features(encoder, shared_root, cache_dir, progress=verbose)
    features = reduce_features(*features, pca, l2=l2)
    print(f"features: train {features[0].shape}, test {features[1].shape} "
          f"({time.perf_counter() - start:.0f} s incl. cache and PCA)", flush=True)
    config = config or CIFAR10_LRA_CONFIG
    if ablations:
        for setting in settings:
            rows = cifar10_ablations(setting, features, shared_root, seed=seeds[0], config=config, variants=variants)
            path = out_dir / f"ablations-{setting}.json"
            if path.exists():  # keep the rows of variants this run did not recompute (same config and seed)
                old = json.loads(path.read_text())
                if old.get("config") == config and old.get("seed") == seeds[0]:
                    new = {r["variant"] for r in rows}
                    rows += [r for r in old["rows"] if r["variant"] not in new]
            write_result(path, {"encoder": encoder, "pca": pca, "seed": seeds[0], "config": config, "rows": rows})
        rows = [row for p in sorted(out_dir.glob("ablations-*.json")) for row in json.loads(p.read_text())["rows"]]
        replace_section(markdown, f"cifar10-ablations-{encoder}", ablation_table(rows))
        print(f"ablations done in {time.perf_counter() - start:.0f} s", flush=True)
        return
    # every (setting, seed) runs LRA + the noisy-label baselines; settings that share a clean-label
    # ceiling (same rows, validation labels and seed) share one ceiling computation
    tasks = []
    for sd in seeds:  # a seed's ceilings first, so its results can be written as they come
        ceilings = {ceiling_key(st, sd): st for st in settings}
        tasks += [("ceiling", st, sd, config) for st in ceilings.values()]
        tasks += [("noisy", st, sd, config) for st in settings]
    pending, done_ceilings = {}, {}

    def on_done(task, result):
        kind, setting, seed, _ = task
        if kind == "ceiling":
            done_ceilings[ceiling_key(setting, seed)] = result
        else:
            pending[(setting, seed)] = result
        for (st, sd), record in list(pending.items()):
            ceiling = done_ceilings.get(ceiling_key(st, sd))
            if ceiling is None:
                continue
            del pending[(st, sd)]
            record["baselines"].update(ceiling)
            record.update(encoder=encoder, pca=pca, jobs=jobs)
            write_result(out_dir / f"{st}-seed{sd}.json", record)
            b = record["baselines"]
            print(f"[{time.perf_counter() - start:6.0f} s] {st} seed {sd}: LRA {record['lra']['test_accuracy']:.4f}"
                  f" ({record['lra']['seconds']:.0f} s) | linear {b['linear']['test_accuracy']:.4f}"
                  f" mlp {b['mlp']['test_accuracy']:.4f} knn {b['knn']['test_accuracy']:.4f}"
                  f" cleanlab {b['cleanlab']['test_accuracy']:.4f}"
                  f" | ceiling {max(b['ceiling_linear']['test_accuracy'], b['ceiling_mlp']['test_accuracy']):.4f}",
                  flush=True)

    _run_tasks(tasks, features, shared_root, jobs, on_done)
    results = [r for r in read_results(out_dir) if r.get("encoder") == encoder]
    replace_section(markdown, f"cifar10-main-{encoder}", cifar10_table(results, encoder))
    print(f"total {time.perf_counter() - start:.0f} s; table written to {markdown}", flush=True)


ABLATION_TRAINING = {  # key: (row label, config change)
    "k0": ("k=0 (no retrieval)", {"retrieval": {"k": 0}}),
    "k5": ("k=5", {"retrieval": {"k": 5}}),
    "k20": ("k=20", {"retrieval": {"k": 20}}),
    "k50": ("k=50", {"retrieval": {"k": 50}}),
    "uniform": ("uniform weights", {"retrieval": {"weighting": False}}),
    "no-ema": ("no EMA", {"train": {"use_ema": False}}),
    "frozen-x": ("x-encoding frozen random", {"model": {"x_encoder": "frozen"}}),
    # not an ablation of the method but a diagnostic: the same denoiser without retrieval on the *clean*
    # labels, i.e. what the diffusion head reaches on these features at this budget (vs the CE ceilings)
    "clean-k0": ("diagnostic: k=0 trained on the clean labels", {"retrieval": {"k": 0}}),
}
ABLATION_INFERENCE = {
    "DDIM 1 step": {"ddim_steps": 1},
    "DDIM 5 steps": {"ddim_steps": 5},
    "DDIM 50 steps": {"ddim_steps": 50},
    "read-out argmax": {"readout": "argmax"},
}


def cifar10_ablations(setting: str, features, shared_root: Path, *, seed: int, config: dict,
                      variants: list[str] | None = None) -> list[dict]:
    """Ablation rows on one setting: the main config, inference-only variants, and the retrained
    ``variants`` (keys of ABLATION_TRAINING; all when None)."""
    from .config import Config

    split = cifar10_split(setting, *features, shared_root, seed=seed)
    base = Config.from_dict(config)
    main, est = run_lra(split, config=base, seed=seed, return_model=True)
    rows = [{"setting": setting, "variant": "main (k=10, weighted, EMA, trainable x, 10 DDIM steps, closest-to-1)",
             **main}]
    for name, change in ABLATION_INFERENCE.items():
        est.config_ = base.replace(diffusion=change)
        rows.append({"setting": setting, "variant": name, "test_accuracy": float(est.score(split.X_test, split.y_test))})
    est.config_ = base
    for key in variants if variants is not None else list(ABLATION_TRAINING):
        name, change = ABLATION_TRAINING[key]
        data = replace(split, y_train=split.y_train_clean) if key == "clean-k0" else split
        rows.append({"setting": setting, "variant": name, **run_lra(data, config=base.replace(**change), seed=seed)})
        print(f"  ablation {setting} {name}: {rows[-1]['test_accuracy']:.4f}", flush=True)
    return rows


def ablation_table(rows: list[dict]) -> str:
    """The markdown table of ablation ``rows`` (test accuracy, one column a setting, the main row first)."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    order = [*ABLATION_INFERENCE, *(name for name, _ in ABLATION_TRAINING.values())]  # main row first
    variants = sorted(dict.fromkeys(r["variant"] for r in rows), key=lambda v: order.index(v) if v in order else -1)
    acc = {(r["setting"], r["variant"]): r["test_accuracy"] for r in rows}
    lines = ["| variant | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(f"{acc[(s, v)]:.2%}" if (s, v) in acc else "-" for s in settings) + " |")
    return "\n".join(lines)
