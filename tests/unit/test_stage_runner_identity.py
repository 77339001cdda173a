"""What decides whether a warm stage runner may serve a request (`jobs.stage_server`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import SecretStr

from configs.settings import Settings
from jobs.stage_server import runner_fingerprint, runner_socket


def test_a_runner_serves_only_requests_with_its_settings_and_secrets(tmp_path: Path) -> None:
    base = Settings(var_dir=tmp_path / "var", erasure_salt=SecretStr("salt-0123456789abcdef"))
    assert runner_fingerprint(base) == runner_fingerprint(base.model_copy())
    assert runner_fingerprint(base) != runner_fingerprint(base.model_copy(update={"list_length": 21}))
    # A secret is compared too (through the digest, never sent): a new salt must not meet an old runner.
    other_salt = base.model_copy(update={"erasure_salt": SecretStr("salt-fedcba9876543210")})
    assert runner_fingerprint(base) != runner_fingerprint(other_salt)


def test_each_store_has_its_own_socket_in_a_folder_only_its_user_enters(tmp_path: Path) -> None:
    one = runner_socket(Settings(var_dir=tmp_path / "one"))
    two = runner_socket(Settings(var_dir=tmp_path / "two"))
    assert one != two and one.parent == two.parent
    assert one.parent.parent == Path(tempfile.gettempdir())
    assert one.parent.stat().st_mode & 0o777 == 0o700 and one.parent.stat().st_uid == os.getuid()
    # A Unix socket's path is limited to 107 bytes, whatever the store's folder.
    deep = Settings(var_dir=tmp_path / ("x" * 200) / "var")
    assert len(str(runner_socket(deep))) < 108
