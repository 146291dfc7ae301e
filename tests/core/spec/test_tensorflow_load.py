"""Loading TensorFlow quietly: its C++ lines are hidden, everything else written to stderr is kept."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap

import pytest

from tlstudio.core.spec import tensorflow_load

NATIVE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796177942.064394   11796 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n",
    b"I0000 00:00:1796177959.401732   12804 port.cc:153] oneDNN custom operations are on.\n",
    b"E0000 00:00:1796178134.289746   19106 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n",
    b"2024-01-01 10:00:00.123456: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow binary\n",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n",
]
OURS = [b"scan 100% 6/6\n", b"/tmp/x.py:5: UserWarning: kept warning\n", b"  warnings.warn('kept')\n"]


def _run(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter (descriptor 2 is the pipe read here)."""
    env = {k: v for k, v in os.environ.items() if k != tensorflow_load.LOG_LEVEL_ENV}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, env=env, timeout=300)


@pytest.mark.parametrize("line", NATIVE[:5])
def test_native_lines_are_recognised(line):
    assert tensorflow_load.is_native_log_line(line)


@pytest.mark.parametrize("line", [
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
    b"fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: UINT8\n",
])
def test_tflite_lines_are_recognised(line):
    assert tensorflow_load.is_native_log_line(line)


def test_quietly_steps_aside_for_the_users_log_level(monkeypatch):
    for level, shown in (("0", True), ("1", True), ("2", False), ("3", False)):
        monkeypatch.setenv(tensorflow_load.LOG_LEVEL_ENV, level)
        assert isinstance(tensorflow_load.quietly(), contextlib.nullcontext) == shown
    monkeypatch.delenv(tensorflow_load.LOG_LEVEL_ENV)
    assert not isinstance(tensorflow_load.quietly(), contextlib.nullcontext)


@pytest.mark.parametrize("line", OURS + [b"tlstudio: error: the folder has no images\n"])
def test_our_lines_are_not_native(line):
    assert not tensorflow_load.is_native_log_line(line)


def test_continuation_lines_go_with_their_native_line():
    lines = [OURS[0], NATIVE[4], NATIVE[5], OURS[1], OURS[2], NATIVE[1], OURS[0], NATIVE[5]]
    assert tensorflow_load.without_native_logs(lines) == [OURS[0], OURS[1], OURS[2], OURS[0], NATIVE[5]]


def test_quiet_block_hides_injected_native_lines_and_keeps_the_rest():
    result = _run(f"""
        import os, sys
        from tlstudio.core.spec.tensorflow_load import quiet_native_logs
        with quiet_native_logs():
            for line in {NATIVE + OURS!r}:
                os.write(2, line)
            print("python stderr", file=sys.stderr)
        print("after", file=sys.stderr)
    """)
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [
        "scan 100% 6/6", "/tmp/x.py:5: UserWarning: kept warning", "  warnings.warn('kept')", "python stderr", "after"]


def test_a_failing_block_keeps_every_line():
    result = _run(f"""
        import os
        from tlstudio.core.spec.tensorflow_load import quiet_native_logs
        try:
            with quiet_native_logs():
                os.write(2, {NATIVE[3]!r})
                raise ImportError("libcudart.so: cannot open shared object file")
        except ImportError:
            pass
    """)
    assert b"failed call to cuInit" in result.stderr


def test_the_quiet_import_hook_steps_aside_for_the_users_log_level(monkeypatch):
    monkeypatch.setenv(tensorflow_load.LOG_LEVEL_ENV, "0")
    assert tensorflow_load.install_quiet_import() is False
    assert not any(isinstance(f, type(tensorflow_load._finder)) for f in sys.meta_path)


def test_importing_tensorflow_prints_none_of_its_cpp_lines():
    result = _run("""
        import sys
        from tlstudio.core.spec import tensorflow_load
        assert tensorflow_load.install_quiet_import()
        import tensorflow as tf
        tf.constant([1.0]) + 1.0
        print("imported", file=sys.stderr)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.decode().strip() == "imported"


def test_preloading_loads_native_libraries_without_tensorflow_in_sys_modules():
    result = _run("""
        import sys
        from tlstudio.core.spec.tensorflow_load import preload_native_libraries
        loaded = preload_native_libraries()
        assert "tensorflow" not in sys.modules
        import tensorflow as tf
        print(len(loaded), float(tf.reduce_sum(tf.constant([1.0, 2.0]))))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    count, total = result.stdout.decode().split()
    assert float(total) == 3.0
    assert int(count) >= (1 if sys.platform.startswith("linux") else 0)


def test_collections_are_deferred_during_a_load_and_what_it_loaded_is_frozen():
    """Full collections during TensorFlow's import were the window's longest stalls while it loads."""
    import gc

    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    with tensorflow_load.collections_deferred():
        assert not gc.isenabled()
        loaded = [[n] for n in range(1000)]  # objects a load leaves behind
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(loaded)
    gc.unfreeze()
    gc.disable()
    try:
        with tensorflow_load.collections_deferred():
            pass
        assert not gc.isenabled()  # a caller's own choice stands
    finally:
        gc.enable()
