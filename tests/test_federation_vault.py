"""Peers' tokens at rest are sealed by ``aurora.sealed``, the one module for Fernet key files: a
node upgraded in place still opens the tokens its older vault sealed, and the key files stay 0600."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import HostilePeer
from sqlalchemy import update

from aurora import sealed
from aurora.federation import identity, registry, vault
from aurora.federation.models import Node
from aurora.federation.sync import Syncer

#: made by aurora/federation/vault.py as it was before it used aurora.sealed (commit 9b76c81):
#: its key file, and ``vault.seal(key_file, OLD_TOKEN)``
OLD_KEY_FILE = b"85lkbyvKyg74G5N8PbvEiFhACNeOUZhXotTJGCTJ35s=\n"
OLD_TOKEN = "aurfed_" + "s" * 40
OLD_SEALED = ("fernet:gAAAAABrDwFdgltbi0Ccgo1xpieZb9-PLU8xaoTmwMVbp8LXUyhEQxI-y8cUQzHKGHI_PsbCWV8lq4h26_7U7Rqgu"
              "VOoDz2Q93aud4HuDB5R_8B4ffg0CWYZA9POS2wDwkth_uMDphgR")
PEER_KEY = Ed25519PrivateKey.generate()


def old_key_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(OLD_KEY_FILE)
    path.chmod(0o600)
    return path


def test_a_token_the_old_vault_sealed_still_opens(tmp_path) -> None:
    path = old_key_file(tmp_path / "federation_tokens.key")
    assert vault.open_token(path, OLD_SEALED) == OLD_TOKEN
    assert vault.open_token(path, OLD_TOKEN) == OLD_TOKEN  # plain text from before sealing: as it is
    # and what the vault seals now opens with aurora.sealed, and the other way round
    assert sealed.unseal(path, vault.seal(path, "aurfed_new")) == "aurfed_new"
    assert vault.open_token(path, sealed.seal(path, "aurfed_other")) == "aurfed_other"


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    path = Path(env["AURORA_POLICY_FILE"])
    policy = json.loads(path.read_text())
    policy.update(federation_enabled=True, federation_nodes=["evil"])
    path.write_text(json.dumps(policy))
    return env


def test_a_node_upgraded_in_place_keeps_pulling_with_its_peers_old_tokens(runtime) -> None:
    key_file = old_key_file(runtime.settings.federation_secret_path)
    with HostilePeer() as peer:
        registry.register(runtime.db, peer.url, "evil", "aurfed_" + "x" * 40,
                          public_key=identity.encode(PEER_KEY.public_key()), secret_path=key_file)
        with runtime.db.write() as session:  # the row as the older Aurora left it
            session.execute(update(Node).where(Node.name == "evil").values(token=OLD_SEALED))
        [result] = Syncer(runtime).run("evil")
        assert "error" not in result, result
        assert peer.received[0].headers["authorization"] == f"Bearer {OLD_TOKEN}"
    assert key_file.read_bytes() == OLD_KEY_FILE  # the key file is the same, untouched


def test_key_files_are_private_and_refused_when_open_to_others(tmp_path) -> None:
    path = tmp_path / "home" / "federation_tokens.key"
    token = vault.seal(path, OLD_TOKEN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left beside it
    path.chmod(0o640)
    with pytest.raises(vault.VaultError, match="readable by group or others.*chmod 600"):
        vault.open_token(path, token)
    with pytest.raises(vault.VaultError, match="readable by group or others"):
        vault.seal(path, OLD_TOKEN)


def test_a_lost_key_file_is_said_and_not_replaced_by_a_new_one(tmp_path) -> None:
    path = tmp_path / "federation_tokens.key"
    with pytest.raises(vault.VaultError, match="is missing .*register the peer again"):
        vault.open_token(path, OLD_SEALED)
    assert not path.exists()  # a new key would open nothing, and seal new tokens apart from the old
    other = tmp_path / "other.key"
    vault.seal(other, "aurfed_x")
    with pytest.raises(vault.VaultError, match="does not open with .*register the peer again") as caught:
        vault.open_token(other, OLD_SEALED)
    assert OLD_TOKEN not in str(caught.value)


def test_processes_making_the_key_file_at_once_share_one_key(tmp_path) -> None:
    path = tmp_path / "home" / "definitions.key"
    start = threading.Barrier(8)
    sealed_values: list[str] = []

    def make() -> None:
        start.wait()
        sealed_values.append(sealed.seal(path, "whsec_same"))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sealed_values) == 8 and all(sealed.unseal(path, value) == "whsec_same" for value in sealed_values)
    assert [p.name for p in path.parent.iterdir()] == ["definitions.key"]
