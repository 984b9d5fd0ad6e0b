"""Where the database is, and that its password never reaches a printed line."""

import pytest

from babylon_assets.db.connection import redact_url
from babylon_assets.tools.cli import main


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://babylon:s3cret@db:5432/babylon", "postgresql://babylon:***@db:5432/babylon"),
        ("postgresql://babylon:p@ss%40s3cret@db/babylon", "postgresql://babylon:***@db/babylon"),
        (
            "postgresql://babylon@db/babylon?sslmode=require&password=s3cret",
            "postgresql://babylon@db/babylon?sslmode=require&password=***",
        ),
        ("host=db user=babylon password=s3cret dbname=babylon", "host=db user=babylon password=*** dbname=babylon"),
        ("host=db password = 'with \\' s3cret' dbname=babylon", "host=db password = *** dbname=babylon"),
        (
            "postgresql://babylon@db/babylon?sslmode=verify-full&sslpassword=s3cret",
            "postgresql://babylon@db/babylon?sslmode=verify-full&sslpassword=***",
        ),
        ("host=db sslpassword=s3cret dbname=babylon", "host=db sslpassword=*** dbname=babylon"),
    ],
)
def test_redact_url_hides_every_form_of_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


@pytest.mark.parametrize(
    "url", ["postgresql://postgres:@/postgres?host=/tmp/pg", "postgresql:///babylon", "postgresql://u@127.0.0.1/db"]
)
def test_redact_url_leaves_a_url_without_password_as_it_is(url: str) -> None:
    assert redact_url(url) == url


def test_production_profile_without_database_url_is_an_error_not_the_embedded_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("BABYLON_PROFILE", "production")
    assert main(["verify"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("babylon verify: error: the production profile needs DATABASE_URL")
    assert "embedded PostgreSQL in" not in captured.err
