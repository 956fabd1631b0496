"""URL handling for the production servers (no server needed)."""

from __future__ import annotations

import time

import pytest

from portrait.backends import (
    BackendUnavailable,
    check_http,
    ensure_postgres_database,
    normalize_postgres_url,
    redact,
    redis_connection_string,
    with_connect_timeout,
)
from portrait.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://cache", "cache:6379"),
        ("redis://:p%40ss=@cache:6380/2", "cache:6380,db=2,password=p@ss="),
        ("redis://user:pw@cache:6379", "cache:6379,username=user,password=pw"),
        ("rediss://cache:6379/1?ssl_cert_reqs=none", "cache:6379,db=1,ssl=true,ssl_cert_reqs=none"),
        ("cache:6379,db=3", "cache:6379,db=3"),
    ],
)
def test_redis_connection_string(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


def test_redis_connection_string_timeouts_and_bad_values() -> None:
    assert redis_connection_string("redis://h:1/0", timeout_s=0.5) == (
        "h:1,db=0,socket_timeout=0.5,socket_connect_timeout=0.5"
    )
    with pytest.raises(ValueError, match="','"):
        redis_connection_string("redis://:a,b@h:1")
    with pytest.raises(ValueError, match="not a Redis URL"):
        redis_connection_string("http://h:1")


def test_postgres_urls() -> None:
    assert normalize_postgres_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_postgres_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_postgres_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert (
        with_connect_timeout("postgresql+psycopg://h/db", 3) == "postgresql+psycopg://h/db?connect_timeout=3"
    )
    assert with_connect_timeout("postgresql+psycopg://h/db?sslmode=require", 3).endswith("&connect_timeout=3")
    assert with_connect_timeout("sqlite:///x.db", 3) == "sqlite:///x.db"
    assert redact("postgresql+psycopg://me:secret@db:5432/p") == "postgresql+psycopg://***@db:5432/p"
    assert redact("redis://:secret@cache:6379/0") == "redis://***@cache:6379/0"
    assert redact("sqlite:///a@b/mlflow.db") == "sqlite:///a@b/mlflow.db"  # '@' in a path is not a login


def test_settings_normalize_and_validate(tmp_path) -> None:
    settings = Settings(
        home=tmp_path, profile="production", postgres_url="postgresql://u@h/db", redis_key_prefix="team_a"
    )
    assert settings.postgres_url == "postgresql+psycopg://u@h/db" == settings.tracking_uri
    assert settings.feast_project_name == "portrait_team_a"
    assert not settings.tracking_server
    assert Settings(home=tmp_path, mlflow_tracking_uri="http://mlflow:5000").tracking_server
    with pytest.raises(ValueError):
        Settings(home=tmp_path, redis_key_prefix="team-a")


def test_unreachable_servers_fail_fast() -> None:
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable, match="unreachable") as caught:
        ensure_postgres_database("postgresql://u:secret@127.0.0.1:1/db", timeout_s=2)
    assert "secret" not in str(caught.value)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        check_http("http://127.0.0.1:1/health", timeout_s=2)
    assert time.perf_counter() - started < 30  # not the minutes of retries MLflow or redis-py would take
