"""Out-of-core features: `lra fit` on a memory-mapped file larger than the memory the process
may allocate (RLIMIT_DATA), and chunked statistics / hashes equal to the in-memory ones."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lra_diffusion.features import FeatureRows, map_chunks
from lra_diffusion.io import sha256_array

# The child sets RLIMIT_DATA (private writable memory: heap and anonymous maps, not a read-only file
# map) to what it uses after its imports and a tiny warm-up fit plus HEADROOM, then runs `lra fit` on a file bigger than that.
CHILD = textwrap.dedent('''
    import resource, sys
    import lra_diffusion.cli as cli, lra_diffusion.features as features, lra_diffusion.estimator  # noqa: F401
    import lra_diffusion.train, torch  # noqa: F401
    import numpy as np
    from lra_diffusion.estimator import LRAClassifier
    features.CHUNK_BYTES = 8 * 2**20  # 8 MB chunks, so the limit can be small
    torch.set_num_threads(1)
    # a tiny fit first loads every lazily imported module, so the limit measures the big fit alone
    g = np.random.default_rng(0)
    LRAClassifier(epochs=1, k=3, feature_dim=16).fit(g.normal(size=(300, 8)).astype(np.float32), g.integers(0, 2, 300))
    data_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmData:"))
    limit = data_kb * 1024 + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    sys.argv = ["lra", *sys.argv[2:]]
    cli.main()
''')


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    n, d = 2500, 16384  # float32: 164 MB on disk
    g = np.random.default_rng(0)
    centres = g.normal(size=(4, d)).astype(np.float32)
    y = g.integers(0, 4, n)
    X = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 500):
        X[s : s + 500] = centres[y[s : s + 500]] + g.normal(size=(len(y[s : s + 500]), d)).astype(np.float32)
    X.flush()
    np.save(folder / "y.npy", y)
    return folder, n, d


def run_child(folder, headroom: int, *args: str) -> subprocess.CompletedProcess:
    (folder / "fit.toml").write_text("[retrieval]\nk = 3\n[model]\nfeature_dim = 16\n[train]\nbatch_size = 128\n")
    cmd = [sys.executable, "-c", CHILD, str(headroom), "fit", "--features", str(folder / "x.npy"),
           "--labels", str(folder / "y.npy"), "--config", str(folder / "fit.toml"), "--epochs", "1", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1",
                                                                                "PATH": "/usr/bin:/bin"})


def test_fit_on_a_mapped_file_larger_than_the_memory_limit(big_file):
    folder, n, d = big_file
    file_bytes = (folder / "x.npy").stat().st_size
    headroom = 120 * 2**20
    assert file_bytes > headroom  # the file does not fit in what the process may allocate
    out = run_child(folder, headroom, "--out", str(folder / "run"), "--mmap")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (folder / "run" / "model.safetensors").exists()
    # the same limit without --mmap (np.load reads the file into memory) fails: the check can fail
    loaded = run_child(folder, headroom, "--out", str(folder / "run2"), "--no-mmap")
    assert loaded.returncode != 0


def test_chunked_statistics_equal_in_memory(monkeypatch):
    X = np.random.default_rng(1).normal(3, 2, size=(1001, 7)).astype(np.float32)
    monkeypatch.setattr("lra_diffusion.features.CHUNK_BYTES", 4 * 7 * 100)
    rows = FeatureRows(X)
    mean, std = rows.mean_std()
    torch.testing.assert_close(mean, torch.from_numpy(X).mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(std, torch.from_numpy(X).std(0), rtol=1e-5, atol=1e-5)
    assert rows.sha256() == sha256_array(X)
    assert FeatureRows(X.astype(np.float16)).sha256() == sha256_array(X.astype(np.float16).astype(np.float32))
    Xb = X.copy()
    Xb[537, 3] = np.nan
    assert FeatureRows(Xb).first_nonfinite_row() == 537 and rows.first_nonfinite_row() is None
    sub = FeatureRows(X, np.array([5, 1, 9]))
    np.testing.assert_array_equal(sub[:], X[[5, 1, 9]])
    np.testing.assert_array_equal(sub.gather(torch.tensor([2, 0])).numpy(), X[[9, 5]])
    out = map_chunks(lambda c: torch.from_numpy(c[:, :2] * 2), FeatureRows(X), rows_per_call=64)
    np.testing.assert_array_equal(out.numpy(), X[:, :2] * 2)
