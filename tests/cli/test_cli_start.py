"""Commands that start fast: the light ones never import TensorFlow; none prints its C++ lines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tlstudio.core.data.samples import make_sample_folders


def test_light_commands_do_not_import_tensorflow(tmp_path):
    images = make_sample_folders(tmp_path / "images", per_class=2)
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        import tlstudio.cli as c
        for argv in (["data", {str(images)!r}], ["runs"], ["cache", "status"], ["weights", "status"], ["--help"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = c.main(argv)
            loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
            assert code == 0 and not loaded, (argv, code, loaded)
    """)
    env = {**os.environ, "TLSTUDIO_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def _inspect(tmp_path, *extra: str, env_extra: dict | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update({"TLSTUDIO_HOME": str(tmp_path / "home"), **(env_extra or {})})
    result = subprocess.run([sys.executable, "-m", "tlstudio", "inspect", "efficientnet-lite0", *extra], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_a_tensorflow_command_hides_its_cpp_lines_unless_debug(tmp_path):
    quiet = _inspect(tmp_path)
    assert "I0000" not in quiet and "cuInit" not in quiet and "absl::InitializeLog" not in quiet
    assert "oneDNN" not in quiet and "cuda drivers" not in quiet
