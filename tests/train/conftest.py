import jax
import pytest


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """Runs of one module that compile the same programs share a persistent XLA cache, for that
    module only (restored afterwards, so compile-counting tests elsewhere see normal compiles)."""
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
