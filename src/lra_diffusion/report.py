"""One self-contained ``report.html`` for a run directory: summary, config, accuracies, label issues.

The page embeds every image as a base64 PNG (matplotlib, Agg) and links nothing outside itself, so it
can be mailed or archived as one file. What it shows depends on what the run directory holds:

* always: run summary, config, training loss / validation accuracy curves (``metrics.json``);
* with ``issues.csv`` (``lra issues --out RUN/issues.csv``, or ``issues=`` in Python): confusion matrix,
  the noise transition matrix estimated from the flags, the score histogram, the most suspicious rows,
  and, when the CSV carries ``true_label``, the true transition matrix and the flags' precision / recall;
* with ``demo.json``: the demo's test accuracies;
* with images (``images.npy`` uint8 (N, H, W, 3) or (N, H, W), or ``images=``): a grid of the most
  suspicious training images with their given and predicted labels;
* with texts (``texts.jsonl`` in the run directory, ``{"text": ...}`` per line, or ``texts=``): the
  text of each suspicious row in the table.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402

from .errors import InputError  # noqa: E402
from .io import atomic_write, load_array, read_json  # noqa: E402
from .issues import LabelIssues, issue_metrics, transition_counts, transition_from_flags  # noqa: E402

GRID_SIZE = 32  # suspicious images shown
TABLE_ROWS = 25  # suspicious rows listed
TEXT_CHARS = 300  # characters of a suspicious text shown in the table
TEXTS_FILE = "texts.jsonl"  # the training texts of a text run, for the table


@dataclass
class Figure:
    """An embedded figure: its PNG as a data URI and the labels it was checked to carry."""

    id: str
    title: str
    xlabel: str
    ylabel: str
    uri: str
    caption: str = ""


def figure_labels(fig: plt.Figure) -> tuple[str, str, str]:
    """The (title, x label, y label) of a figure; raises ValueError when one is missing.

    A figure-level suptitle / supxlabel / supylabel counts for all its axes; otherwise every visible
    axes with content needs its own (colour bars excepted).
    """
    sup_t = fig._suptitle.get_text() if fig._suptitle else ""
    sup_x = fig._supxlabel.get_text() if fig._supxlabel else ""
    sup_y = fig._supylabel.get_text() if fig._supylabel else ""
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    if not axes:
        raise ValueError("figure has no axes")
    title = sup_t or axes[0].get_title()
    for ax in axes:
        if not (sup_t or ax.get_title()):
            raise ValueError("figure without a title")
        if not (sup_x or ax.get_xlabel()) or not (sup_y or ax.get_ylabel()):
            raise ValueError(f"axes {ax.get_title() or title!r} without axis labels")
    return title, sup_x or axes[0].get_xlabel(), sup_y or axes[0].get_ylabel()


def embed(fig: plt.Figure, fig_id: str, caption: str = "") -> Figure:
    """Check the figure's labels, render it to a PNG data URI and close it."""
    try:
        title, xlabel, ylabel = figure_labels(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return Figure(fig_id, title, xlabel, ylabel, uri, caption)


# ---- figures ---------------------------------------------------------------------------------------
def _matrix_axes(ax, m: np.ndarray, names: list[str], title: str, xlabel: str, ylabel: str, fmt: str) -> None:
    im = ax.imshow(m, cmap="Blues", vmin=0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90 if len(names) > 10 or max(map(len, names)) > 3 else 0)
    ax.set_yticks(ticks, names)
    if len(names) <= 12:
        hi = m.max() if m.size else 0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="white" if hi and m[i, j] > hi / 2 else "black")
    return im


def confusion_figure(truth: np.ndarray, pred: np.ndarray, names: list[str], *, truth_name: str) -> Figure:
    """The confusion matrix (counts) of ``pred`` against ``truth`` (rows: the ``truth_name`` labels)."""
    c = len(names)
    m = np.zeros((c, c), dtype=np.int64)
    np.add.at(m, (truth, pred), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * c, 1.0 + 0.5 * c))
    fig.colorbar(_matrix_axes(ax, m, names, f"Confusion matrix (training samples, {truth_name} labels)",
                              "predicted label", f"{truth_name} label", "d"), ax=ax, shrink=0.8)
    acc = float(np.trace(m) / max(m.sum(), 1))
    return embed(fig, "confusion", f"Rows: {truth_name} label, columns: the model's prediction. "
                                   f"Agreement {acc:.2%} over {m.sum()} samples.")


def transition_figure(est: np.ndarray, true: np.ndarray | None, names: list[str]) -> Figure:
    """The estimated noise transition matrix P(given | true) beside the true one (when known)."""
    c = len(names)
    n = 2 if true is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(n * (1.2 + 0.5 * c), 1.0 + 0.5 * c), squeeze=False)
    _matrix_axes(axes[0, 0], est, names, "Estimated from flags", "given (noisy) label",
                 "estimated true label", ".2f")
    if true is not None:
        _matrix_axes(axes[0, 1], true, names, "True (from clean labels)", "given (noisy) label", "true label", ".2f")
    fig.suptitle("Noise transition matrix P(given label | true label)")
    caption = ("Estimated true label = the prediction for flagged samples, the given label otherwise.")
    if true is not None:
        caption += f" Mean absolute difference to the true matrix: {np.abs(est - true).mean():.4f}."
    return embed(fig, "transition", caption)


def curves_figure(history: list[dict]) -> Figure | None:
    """The training curves of ``history`` (loss, held-out accuracy); None without any."""
    epochs = [h["epoch"] for h in history if "loss" in h]
    if not epochs:
        return None
    losses = [h["loss"] for h in history if "loss" in h]
    val = [(h["epoch"], h["val_accuracy"]) for h in history if h.get("val_accuracy") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(epochs, losses, marker="." if len(epochs) < 50 else None)
    axes[0].set_title("Training loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("weighted MSE of the denoiser")
    if val:
        axes[1].plot(*zip(*val), marker="o", color="tab:green")
    else:
        axes[1].text(0.5, 0.5, "no validation data", ha="center", va="center", transform=axes[1].transAxes)
    axes[1].set_title("Validation accuracy")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("accuracy")
    fig.suptitle("Training curves")
    return embed(fig, "curves", "Loss per epoch (mean over its steps) and accuracy on the validation data "
                                "used for model selection (held-out noisy labels unless a validation set was given).")


def score_histogram(scores: np.ndarray, flags: np.ndarray, is_error: np.ndarray | None) -> Figure:
    """Histogram of the label-quality scores (right and wrong labels apart where known), with the flag cut."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.linspace(0, 1, 26)
    if is_error is not None:
        ax.hist(scores[~is_error], bins=bins, alpha=0.6, label=f"correct label ({(~is_error).sum()})", color="tab:blue")
        ax.hist(scores[is_error], bins=bins, alpha=0.6, label=f"wrong label ({is_error.sum()})", color="tab:red")
        title = "Label-quality scores: correct vs wrong labels"
    else:
        ax.hist(scores, bins=bins, color="tab:gray", label=f"all samples ({len(scores)})")
        title = "Label-quality scores"
    if flags.any() and (~flags).any():
        cut = (scores[flags].max() + scores[~flags].min()) / 2
        ax.axvline(cut, color="black", ls="--", lw=1, label="flag cut")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("label quality (higher = more likely correct)")
    ax.set_ylabel("samples (log scale)")
    ax.legend(loc="upper center", fontsize=8)
    return embed(fig, "scores")


def image_grid(images: np.ndarray, rows: np.ndarray, given: list[str], pred: list[str], scores: np.ndarray) -> Figure:
    """The images of ``rows`` with their given and predicted labels and scores."""
    n = len(rows)
    cols = min(8, n)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(1.6 * cols, 2.1 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for j, r in enumerate(rows):
        ax = axes.ravel()[j]
        img = images[r]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(f"#{r}\n{given[j]} → {pred[j]}\n{scores[j]:.3g}", fontsize=7)
    fig.suptitle("Most suspicious training images (given → predicted, score)")
    fig.supxlabel("rank, left to right (most suspicious first)")
    fig.supylabel("row of the grid")
    return embed(fig, "suspicious-images")


# ---- page ------------------------------------------------------------------------------------------
def _check_images(images, n: int) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InputError(f"images must be uint8, got {images.dtype}")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
        raise InputError(f"images must be (N, H, W, 3) or (N, H, W), got shape {images.shape}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if len(images) != n:
        raise InputError(f"images have {len(images)} rows but the issues cover {n} samples")
    return images


def _is_run_dir(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    if not (run_dir / "config.json").exists():
        raise InputError(f"{run_dir} is not a run directory (missing config.json)")
    info = read_json(run_dir / "config.json")
    if not isinstance(info, dict) or info.get("format") != "lra-diffusion-run/1":
        raise InputError(f"{run_dir / 'config.json'} is not an lra-diffusion run config")
    return info


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    issues: LabelIssues | None = None,
    images: np.ndarray | None = None,
    class_names: list[str] | None = None,
    texts: list[str] | None = None,
) -> Path:
    """Write the run's self-contained HTML report; returns its path (default ``run_dir/report.html``).

    Parameters
    ----------
    run_dir : a run directory (``config.json``, ``metrics.json``).
    out : the HTML file to write.
    issues : label issues to show; default ``run_dir/issues.csv`` when it exists.
    images : uint8 (N, H, W, 3) or (N, H, W), row i = sample ``issues.index == i``; default
        ``run_dir/images.npy`` when it exists.
    class_names : display names in the order of the run's classes (default: the label values).
    texts : the training texts, row i = sample ``issues.index == i``; default ``run_dir/texts.jsonl``
        when it exists.
    """
    run_dir = Path(run_dir)
    info = _is_run_dir(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    classes = np.asarray(info["classes"], dtype=np.dtype(info.get("classes_dtype", "<i8")))
    if class_names is not None and len(class_names) != len(classes):
        raise InputError(f"{len(class_names)} class names for {len(classes)} classes")
    names = [str(n) for n in (class_names if class_names is not None else classes.tolist())]
    if issues is None and (run_dir / "issues.csv").exists():
        issues = LabelIssues.from_csv(run_dir / "issues.csv")
    if images is None and (run_dir / "images.npy").exists():
        images = load_array(run_dir / "images.npy", what="images")
    if texts is None and (run_dir / TEXTS_FILE).exists():
        from .data.text import read_texts

        texts = read_texts(run_dir / TEXTS_FILE)
    if texts is not None and issues is not None and len(issues) and int(issues.index.max()) >= len(texts):
        raise InputError(f"{len(texts)} texts, but the issues name row {int(issues.index.max())}")
    if images is not None and issues is not None:  # images without issues have nothing to show
        images = _check_images(images, int(issues.index.max()) + 1 if len(issues) else 0)

    figures: list[Figure] = []
    accuracy_rows: list[tuple[str, str]] = []
    issue_rows: list[dict] = []
    issue_summary: dict[str, str] = {}

    fit = {k: v for k, v in metrics.items() if k != "history"}
    if fit.get("best_val_accuracy") is not None:
        accuracy_rows.append(("validation accuracy of the selected model", f"{fit['best_val_accuracy']:.4f}"))
    if (run_dir / "demo.json").exists():
        demo = read_json(run_dir / "demo.json")
        for name, acc in demo.get("test_accuracy", {}).items():
            accuracy_rows.append((f"test accuracy: {name}", f"{acc:.4f}"))

    if issues is not None:
        def to_idx(values, what):
            values = np.asarray(values)
            if classes.dtype.kind in "iu" and values.dtype.kind not in "iu":
                raise InputError(f"{what} in the issues are not integers, but the run's classes are")
            unknown = np.setdiff1d(values, classes)
            if len(unknown):
                raise InputError(f"{what} {unknown[:5].tolist()} are not among the run's classes")
            return np.searchsorted(classes, values)

        given = to_idx(issues.given_label, "given labels")
        pred = to_idx(issues.predicted_label, "predicted labels")
        true = to_idx(issues.true_label, "true labels") if issues.true_label is not None else None
        flags, scores, c = issues.is_label_issue, issues.label_quality, len(classes)
        accuracy_rows.append(("training samples where prediction = given label", f"{(pred == given).mean():.4f}"))
        if true is not None:
            accuracy_rows.append(("training accuracy against the true labels", f"{(pred == true).mean():.4f}"))
            accuracy_rows.append(("given labels that are correct (1 - noise rate)", f"{(given == true).mean():.4f}"))
        issue_summary = {"samples scored": str(len(issues)), "flagged as label issues":
                         f"{flags.sum()} ({flags.mean():.2%})"}
        if true is not None:
            m = issue_metrics(given != true, scores, flags)
            issue_summary |= {"precision": f"{m['precision']:.4f}", "recall": f"{m['recall']:.4f}",
                              "F1": f"{m['f1']:.4f}", "AUROC": f"{m['auroc']:.4f}"}
        figures.append(confusion_figure(true if true is not None else given, pred, names,
                                        truth_name="true" if true is not None else "given"))
        figures.append(transition_figure(transition_from_flags(given, pred, flags, c),
                                         transition_counts(true, given, c) if true is not None else None, names))
        figures.append(score_histogram(scores, flags, given != true if true is not None else None))
        order = np.lexsort((issues.index, scores))
        for r in order[:TABLE_ROWS]:
            issue_rows.append({"index": int(issues.index[r]), "given": names[given[r]], "predicted": names[pred[r]],
                               "score": f"{scores[r]:.4f}", "flag": bool(flags[r]),
                               "true": names[true[r]] if true is not None else None,
                               "text": _short(texts[int(issues.index[r])]) if texts is not None else None})
        if images is not None:
            top = order[:GRID_SIZE]
            figures.append(image_grid(images, issues.index[top], [names[i] for i in given[top]],
                                      [names[i] for i in pred[top]], scores[top]))
    curves = curves_figure(metrics.get("history", []))
    if curves is not None:
        figures.insert(0, curves)

    summary = {
        "run directory": str(run_dir),
        "classes": f"{len(classes)} ({', '.join(names[:20])}{', ...' if len(names) > 20 else ''})",
        "input features": str(info.get("n_features_in")),
        "seed": str(info.get("seed")),
        **{k.replace("_", " "): _fmt(v) for k, v in fit.items() if not k.endswith("sha256")},
        "versions": ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()),
    }
    env = Environment(loader=PackageLoader("lra_diffusion", "templates"), autoescape=select_autoescape(["html"]))
    page = env.get_template("report.html").render(
        title=f"LRA-diffusion run report: {run_dir.name or run_dir}",
        summary=summary, config=info.get("config", {}), accuracy_rows=accuracy_rows,
        issue_summary=issue_summary, issue_rows=issue_rows,
        has_true=issues is not None and issues.true_label is not None,
        figures={f.id: f for f in figures}, has_issues=issues is not None, has_images=images is not None,
        has_texts=texts is not None,
    )
    atomic_write(out, page.encode("utf-8"))
    return out


def write_texts_jsonl(path: str | Path, texts: list[str]) -> None:
    """``{"text": ...}`` per line (texts may hold newlines): the training texts of a text run."""
    import json

    atomic_write(path, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode())


def _short(text: str, limit: int = TEXT_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
