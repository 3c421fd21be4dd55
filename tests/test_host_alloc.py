"""keep_freed_memory: a freed big block is reused by the next allocation (no fresh page faults),
and VITAL_KEEP_FREED_MEMORY=0 leaves malloc alone (a big block is page-faulted every time)."""

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, resource
    from vital_jax.host_alloc import keep_freed_memory
    on = keep_freed_memory()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    n = 64 * 2**20                            # 64 MiB: above glibc's largest mmap threshold
    def faults():                             # malloc + touch every page + free, as XLA does
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(n)
        ctypes.memset(p, 1, n)
        libc.free(p)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    faults()
    print(on, faults())
""")


def _probe(env_value):
    env = {"VITAL_KEEP_FREED_MEMORY": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    on, faults = out.stdout.split()
    return on == "True", int(faults)


def test_freed_block_is_reused_without_page_faults():
    on, faults = _probe("1")
    assert on
    assert faults < 1000, faults                  # 64 MiB re-used from the heap


def test_opt_out_leaves_malloc_alone():
    on, faults = _probe("0")
    assert not on
    assert faults > 10_000, faults                # 16k pages of a fresh mmap faulted again
