"""Secrets stay out of what tune-run prints, logs or stores."""

from __future__ import annotations

from search.redact import first_line, redact, redact_text


def test_credentials_in_a_uri_become_stars():
    assert redact("http://alice:s3cret@host:5000/x") == "http://***@host:5000/x"
    assert redact("postgresql://token@db/mlflow") == "postgresql://***@db/mlflow"
    assert redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db"  # nothing to hide
    assert redact(None) == ""


def test_every_url_in_a_text_is_redacted():
    text = "failed: http://a:b@one/x then https://t@two/y"
    assert redact_text(text) == "failed: http://***@one/x then https://***@two/y"


def test_an_exception_is_one_redacted_line():
    error = ConnectionError("no answer from http://a:b@host/api\nretry 1\nretry 2")
    assert first_line(error) == "ConnectionError: no answer from http://***@host/api"
