"""``clip2scene train`` / ``evaluate`` build their parsers without importing the training package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clip2scene_ros.cli.main import main


def test_help_does_not_import_training_stages():
    code = (
        "import sys, contextlib, io\n"
        "from clip2scene_ros.cli.main import build_parser\n"
        "p = build_parser()\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        p.parse_args(['train', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'pretrain' in out.getvalue(), out.getvalue()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('clip2scene_training'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_stage_parses_its_own_options_when_it_runs(capsys):
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "student", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: clip2scene evaluate student") and "--config" in out
    with pytest.raises(SystemExit) as bad:
        main(["train", "pretrain", "--no-such-option"])
    assert bad.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err
