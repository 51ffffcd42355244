"""Every command answers --help (and the top-level help lists them all)."""

import pytest

from sprint.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for module in COMMANDS:
        assert module.rsplit(".", 1)[1] in out


@pytest.mark.parametrize("module", COMMANDS)
def test_each_command_has_help(module, capsys):
    with pytest.raises(SystemExit) as e:
        main([module.rsplit(".", 1)[1], "--help"])
    assert e.value.code == 0
    assert "usage: sprint" in capsys.readouterr().out
