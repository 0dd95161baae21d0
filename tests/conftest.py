"""Shared fixtures: the read-only ../shared data, a per-session cache, tiny synthetic folders.

The suite holds on any x86-64 CPU: ``make test-kernels`` runs it with ATen's portable kernels
(``ATEN_CPU_CAPABILITY=default``), with its AVX2 ones and with 1 and 2 PyTorch threads
(``FACECLS_TEST_THREADS=N``, read here); the header of a run says which.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The face library's engines (a real PostgreSQL server included), for every test module.
from tests.library_fixtures import library_location, postgres_url  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the repository; a git worktree (wt/<branch>) finds it one level further up.
SHARED = next(
    (p / "shared" for p in REPO.parents if (p / "shared" / "datasets").is_dir()),
    REPO.parent / "shared",
)
LFW_ARCHIVE = SHARED / "datasets" / "lfw-deepfunneled.tgz"
LFW_SPLITS = SHARED / "datasets" / "lfw-benchmark-splits.csv"


# PyTorch threads for the whole run (unset: PyTorch's default, one per core).
THREADS_ENV = "FACECLS_TEST_THREADS"


def pytest_configure(config: pytest.Config) -> None:
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        if not threads.isdigit() or int(threads) < 1:
            raise pytest.UsageError(f"{THREADS_ENV} must be a whole number >= 1, got {threads!r}")
        torch.set_num_threads(int(threads))


def pytest_report_header(config: pytest.Config) -> str:
    import torch

    return (
        f"facecls kernels: ATen {torch.backends.cpu.get_cpu_capability()} "
        f"(ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'unset')}), "
        f"{torch.get_num_threads()} PyTorch thread(s) ({THREADS_ENV}="
        f"{os.environ.get(THREADS_ENV, 'unset')})"
    )


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One PyTorch thread for a module of tiny models (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): they gain nothing from a second, and on a
    busy 2-core machine two threads waiting on each other make small steps many times slower
    (measured: 40 s against 263 s wall). The setting is restored for the next module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode/extract cache for the whole session (LFW is extracted once)."""
    return tmp_path_factory.mktemp("facecls-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the user's ~/.cache from tests.
    monkeypatch.setenv("FACECLS_CACHE", str(session_cache))


@pytest.fixture(scope="session")
def lfw_archive() -> Path:
    if not LFW_ARCHIVE.exists():
        pytest.fail(f"{LFW_ARCHIVE} is missing: tests read LFW from ../shared/datasets")
    return LFW_ARCHIVE


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small class-per-folder tree of synthetic faces (PNG), 6 identities, 40 px."""
    from facecls.data.synthetic import SyntheticSpec, write_synthetic_folder

    root = tmp_path_factory.mktemp("synthetic") / "faces"
    spec = SyntheticSpec(num_classes=6, max_per_class=16, min_per_class=6, image_size=40, seed=3)
    return write_synthetic_folder(root, spec)


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px baseline bundle of three people, never trained: for contracts on what is written
    where and what is refused, which cannot depend on what a model learned."""
    import torch

    from facecls.bundle import Bundle, save_bundle
    from facecls.models import create_model

    torch.manual_seed(0)
    model = create_model("baseline", num_classes=3, image_size=32)
    folder = tmp_path_factory.mktemp("untrained") / "model"
    save_bundle(Bundle(model, "baseline", ["a", "b", "c"], 32, [0.5] * 3, [0.25] * 3), folder)
    return folder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip, with the reason, where no CUDA device is present (the one
    allowed kind of skip; ``benchmarks/gpu_check.sh`` runs them on a GPU machine)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: run benchmarks/gpu_check.sh on a GPU")
    for item in marked:
        item.add_marker(skip)


# Identity names as long as LFW's longest, so a page's tables must fit them.
LONG_NAMES = (
    "Luiz_Inacio_Lula_da_Silva", "Arnold_Schwarzenegger_Jr", "Gloria_Macapagal_Arroyo",
    "Juan_Carlos_Ferrero_Diaz",
)  # fmt: skip


@pytest.fixture(scope="session")
def four_identity_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> dict:
    """A 2-fold cv run on 4 synthetic identities with long names, started as a user would:
    from its own folder (``root``) with the default relative ``--runs-dir runs``."""
    import os

    from facecls.cli import main
    from facecls.data.synthetic import SyntheticSpec, write_synthetic_folder

    root = tmp_path_factory.mktemp("four")
    spec = SyntheticSpec(num_classes=4, max_per_class=18, min_per_class=10, image_size=32, seed=5)
    data = write_synthetic_folder(root / "faces", spec)
    for old, new in zip(sorted(p.name for p in data.iterdir()), LONG_NAMES, strict=True):
        (data / old).rename(data / new)
    strangers = write_synthetic_folder(
        root / "strangers-src", SyntheticSpec(num_classes=2, max_per_class=4, min_per_class=4,
                                              image_size=32, seed=99),
    )  # fmt: skip
    photos = root / "strangers"
    photos.mkdir()
    for i, path in enumerate(sorted(strangers.rglob("*.png"))):
        path.rename(photos / f"stranger_{i}.png")
    here = Path.cwd()
    os.chdir(root)
    try:
        code = main([
            "--quiet", "cv", "--data", str(data), "--image-size", "32", "--epochs", "2",
            "--folds", "2", "--batch-size", "16", "--cache-dir", str(session_cache),
            "--name", "four",
        ])  # fmt: skip
    finally:
        os.chdir(here)
    assert code == 0
    return {"root": root, "run": root / "runs" / "four", "data": data, "strangers": photos}
