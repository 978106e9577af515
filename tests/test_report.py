"""The reporters' warnings: heard even under --quiet, on stderr or on the reporter's own stream."""

from __future__ import annotations

import io

from dlrun.report import PlainReporter, Reporter, RichReporter, make_reporter


def test_quiet_reporter_says_warnings_on_stderr_and_nothing_else(capsys):
    reporter = make_reporter(quiet=True, json_mode=True)
    reporter.run_started({"protocol": "holdout", "recipe": "r", "run_dir": "d"})
    reporter.epoch("holdout", 1, 2, {"loss": 1.0}, 0.1)
    reporter.note("informational")
    reporter.warn("tracking went away")
    reporter.run_finished({"status": "FINISHED", "run_id": None, "run_dir": "d", "metrics": {}})
    out, err = capsys.readouterr()
    assert out == "" and err == "dlrun: warning: tracking went away\n"


def test_plain_reporter_warns_on_its_own_stream(capsys):
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    reporter.note("a note")
    reporter.warn("lost something")
    assert stream.getvalue().splitlines() == ["dlrun: a note", "dlrun: warning: lost something"]
    assert capsys.readouterr() == ("", "")


def test_json_mode_warns_on_stderr_so_stdout_stays_json(capsys):
    make_reporter(quiet=False, json_mode=True).warn("offline")
    out, err = capsys.readouterr()
    assert out == "" and err == "dlrun: warning: offline\n"


def test_rich_reporter_prints_the_warning_text_as_is(capsys):
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=300)
    reporter = RichReporter(console)
    reporter.warn("offline ([Errno 111] Connection refused [bold]x[/bold])")  # no markup taken from the text
    reporter.close()
    text = console.file.getvalue()
    assert "dlrun: warning: offline ([Errno 111] Connection refused [bold]x[/bold])" in text
    assert "\x1b[33m" in text  # yellow


def test_trial_reporter_passes_warnings_on_with_its_prefix(capsys):
    from dlrun.tuning.trial import TrialReporter

    class Trial:
        number = 4

    TrialReporter(Reporter(), Trial(), "val_loss", kfold=False).warn("offline")
    assert capsys.readouterr().err == "dlrun: warning: trial-4: offline\n"


def test_offline_notice_without_a_reporter_warns_on_stderr(tmp_path, capsys):
    from dlrun.track._outage import TRACKING_FILE, offline_notice

    offline_notice(tmp_path)({"uri": "http://h:1", "reason": "Connection refused"})
    err = capsys.readouterr().err
    assert err.startswith("dlrun: warning: MLflow tracking is offline (http://h:1: Connection refused). ")
    assert err.endswith(f"dlrun sync {tmp_path}\n") and err.count("\n") == 1
    assert (tmp_path / TRACKING_FILE).is_file()
