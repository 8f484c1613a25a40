"""The settings file: a misspelt key is refused with the setting it was meant to be (it
used to be dropped without a word, leaving the default in force)."""

from __future__ import annotations

import pytest

from polychrome.cli.main import main
from polychrome.errors import ConfigError
from polychrome.settings import Settings


@pytest.mark.parametrize(("name", "text"), [
    ("config.toml", "queue_max = 7\nqueu_max = 3\n"),
    ("config.yaml", "queue_max: 7\nqueu_max: 3\n"),
    ("config.yml", "queue_max: 7\nqueu_max: 3\n"),
])
def test_a_misspelt_setting_is_refused_with_a_suggestion(polychrome_home, name, text):
    (polychrome_home / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        Settings()
    msg = str(info.value)
    assert "unknown setting 'queu_max'" in msg and name in msg
    assert "did you mean 'queue_max'?" in msg and "train_max_steps" in msg  # the valid keys


def test_settings_keys_are_case_insensitive_like_their_values(polychrome_home):
    (polychrome_home / "config.toml").write_text("Queue_Max = 7\n")
    assert Settings().queue_max == 7


def test_the_cli_reports_a_settings_typo_in_one_line(polychrome_home, capsys):
    (polychrome_home / "config.yaml").write_text("rate_limt: 12\n")
    rc = main(["models", "list"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'rate_limit'?" in err[0], captured.err
