"""Test-wide settings: CPU, fp32 matmuls at full precision, no torch.compile in reference packages; a data
cache of the run's own; the longest test files first (pytest.ini runs the suite on pytest-xdist workers)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Corpora prepared on first use (the demo's) go to this process's own folder, not the user's ~/.cache/flmjax/data
# that every run and every worker would share; subprocesses (launch/train.py) inherit it.
if "FLMJAX_DATA_CACHE" not in os.environ:
    os.environ["FLMJAX_DATA_CACHE"] = tempfile.mkdtemp(prefix="flmjax-data-cache-")
    atexit.register(shutil.rmtree, os.environ["FLMJAX_DATA_CACHE"], ignore_errors=True)

# Compiling is most of the suite's time, and the tests' models are tiny: XLA's optimisation level 0 and no
# expensive LLVM passes compile much faster (test_lora.py + test_eval_conversation.py: 39 s with level 0, 77 s
# without), though a compiled train step runs slower (the school's: 2.5-3.4 s a step at level 0, 1.2-1.6 s
# without; the school test took 494 s with level 0, 509 s without in a whole CI run). One persistent
# compilation cache for the run, shared by its workers and their subprocesses (inherited like the data cache).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
).strip()
if "FLMJAX_TEST_JAX_CACHE" not in os.environ:
    os.environ["FLMJAX_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="flmjax-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["FLMJAX_TEST_JAX_CACHE"], ignore_errors=True)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_compilation_cache_dir", os.environ["FLMJAX_TEST_JAX_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model():
    """A random `tiny` FLMAudio shared by the tests that only read it (initialising compiles, ~10 s)."""
    from flmjax import FLMAudio

    return FLMAudio.init("tiny", seed=0)


# Test files by their time on a 2-core CPU, longest first (pytest --durations): run first, so that the two
# workers start on them at once and the short files fill in around them, instead of one long file starting
# last while the other worker idles. Files not listed keep their order after these.
LONGEST_FIRST = [
    "test_bench_learning.py",
    "test_train_demo.py",
    "test_train_resume.py",
    "test_train_sharded.py",
    "test_dpo.py",
    "test_lora_train.py",
    "test_train_stages.py",
    "test_cloud_storage.py",
    "test_bench_infer.py",
]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests stay in order
