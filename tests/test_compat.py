"""robustbench 1.1.1 imports ``autoattack``; PyPI ships it as ``pyautoattack``: one alias makes both work."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyautoattack

from wdro_finetune.compat import import_robustbench, robustbench_version


def test_import_robustbench_works_and_aliases_autoattack_to_pyautoattack():
    rb = import_robustbench()
    assert rb.__name__ == "robustbench"
    assert callable(rb.utils.load_model)
    assert sys.modules["autoattack"] is pyautoattack
    import autoattack  # noqa: F401  (resolves through the alias)

    assert autoattack.AutoAttack is pyautoattack.AutoAttack
    assert import_robustbench() is rb, "imported once"
    assert robustbench_version() == "1.1.1"


def test_alias_works_in_a_fresh_interpreter():
    """Plain ``import robustbench`` fails without the alias; through compat it works (fresh process,
    so the result does not depend on what other tests imported)."""
    code = textwrap.dedent("""
        import sys
        try:
            import robustbench  # noqa: F401
            print("plain import: ok")
        except ImportError:
            print("plain import: ImportError")
        for name in [m for m in sys.modules if m.split(".")[0] in ("robustbench", "autoattack")]:
            del sys.modules[name]
        from wdro_finetune.compat import import_robustbench
        import pyautoattack
        rb = import_robustbench()
        assert sys.modules["autoattack"] is pyautoattack
        assert callable(rb.utils.load_model)
        print("compat import: ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "compat import: ok" in out.stdout
    assert "plain import: ImportError" in out.stdout, "if robustbench imports alone the alias is no longer needed"
