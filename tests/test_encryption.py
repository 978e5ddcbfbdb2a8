"""Encryption at rest: AES-GCM record bodies bound to lineage, segment and offset."""

from __future__ import annotations

import pathlib
import sys

import anyio
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Task
from watchstore.log.records import pack_record, parse_header, scan

ROOT = pathlib.Path(__file__).parent.parent

KEY = bytes(range(32))
SECRET = "launch-codes-0042"


def plaintext_in(path: pathlib.Path) -> bool:
    return any(SECRET.encode() in file.read_bytes() for file in path.glob("*.wslog"))


async def write(path: pathlib.Path, key: bytes | None = KEY, count: int = 4) -> None:
    async with ws.open_store(SCHEMA, path=path, key=key) as store:
        for i in range(count):
            await store.update(lambda tx: tx.create(Task(f"t{i}", SECRET)))


async def test_an_encrypted_store_round_trips_and_holds_no_plaintext(
    tmp_path: pathlib.Path,
) -> None:
    await write(tmp_path)
    assert not plaintext_in(tmp_path)
    async with ws.open_store(SCHEMA, path=tmp_path, key=KEY) as store:
        assert store.view(lambda tx: tx.count(Task, service_id=SECRET)) == 4


async def test_the_wrong_key_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    await write(tmp_path)
    with pytest.raises(ws.StoreError, match="wrong encryption key"):
        async with ws.open_store(SCHEMA, path=tmp_path, key=bytes(32)):
            pass


async def test_keys_must_match_how_the_store_was_made(tmp_path: pathlib.Path) -> None:
    await write(tmp_path / "secret")
    with pytest.raises(ws.StoreError, match="is encrypted"):
        async with ws.open_store(SCHEMA, path=tmp_path / "secret"):
            pass
    await write(tmp_path / "plain", key=None)
    with pytest.raises(ws.StoreError, match="not encrypted"):
        async with ws.open_store(SCHEMA, path=tmp_path / "plain", key=KEY):
            pass
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        await write(tmp_path / "short", key=b"too short")


async def test_a_record_moved_elsewhere_with_a_valid_checksum_is_detected(
    tmp_path: pathlib.Path,
) -> None:
    await write(tmp_path, count=3)
    segment = tmp_path / "00000001.wslog"
    data = segment.read_bytes()
    header = parse_header(data)
    records = scan(data, header).records
    # Replay version 1's sealed change in place of version 2's, re-framed so that its
    # checksums verify at the new offset: only the associated data can catch it.
    first, second = records[1], records[2]
    moved = pack_record(header, second.offset, second.kind, first.body)
    end = second.offset + len(pack_record(header, second.offset, second.kind, second.body))
    segment.write_bytes(data[: second.offset] + moved + data[end:])
    with pytest.raises(ws.LogCorrupt, match="does not decrypt at its place") as info:
        async with ws.open_store(SCHEMA, path=tmp_path, key=KEY):
            pass
    assert info.value.offset == second.offset


async def test_compaction_and_rollback_keep_the_encryption(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, key=KEY, keep_epochs=3) as store:
        await store.update(lambda tx: tx.create(Task("a", SECRET)))
        kept = await store.compact()
        await store.update(lambda tx: tx.create(Task("b", SECRET)))
        await store.compact()
    assert not plaintext_in(tmp_path)
    assert [e.version for e in ws.list_epochs(tmp_path, key=KEY)] == [
        ws.Version(0),
        kept,
        ws.Version(2),
    ]
    ws.rollback(tmp_path, kept, key=KEY)
    async with ws.open_store(SCHEMA, path=tmp_path, key=KEY) as store:
        assert store.view(lambda tx: [t.id for t in tx.all(Task)]) == ["a"]


# A child process in which `cryptography` cannot be imported, as where the `encryption` extra
# is not installed: it writes a plain durable store and an in-memory one, then reads the
# encrypted store at argv[2] with its key.
WITHOUT_CRYPTOGRAPHY = """
import sys
sys.modules["cryptography"] = None  # any import of it now fails, as when it is not installed

import pathlib
import trio
import watchstore as ws
from tests.schema import SCHEMA, Task

async def main() -> None:
    plain, secret, key = pathlib.Path(sys.argv[1]), sys.argv[2], bytes(range(32))
    async with ws.open_store(SCHEMA) as store:
        await store.update(lambda tx: tx.create(Task("m", "memory")))
    async with ws.open_store(SCHEMA, path=plain) as store:
        await store.update(lambda tx: tx.create(Task("p", "plain")))
    async with ws.open_store(SCHEMA, path=plain) as store:
        print("plain:", store.view(lambda tx: tx.get(Task, "p")).service_id)
    for what, attempt in [
        ("new", lambda: ws.open_store(SCHEMA, path=plain / "new", key=key)),
        ("open", lambda: ws.open_store(SCHEMA, path=secret, key=key)),
    ]:
        try:
            async with attempt():
                pass
        except ws.StoreError as exc:
            print(f"{what}: {type(exc).__name__}: {exc}")
    try:
        ws.list_epochs(secret, key=key)
    except ws.StoreError as exc:
        print(f"epochs: {type(exc).__name__}: {exc}")

trio.run(main)
"""


async def test_without_cryptography_plain_stores_work_and_keys_name_the_extra(
    tmp_path: pathlib.Path,
) -> None:
    await write(tmp_path / "secret")
    done = await anyio.run_process(
        [
            sys.executable,
            "-c",
            WITHOUT_CRYPTOGRAPHY,
            str(tmp_path / "plain"),
            str(tmp_path / "secret"),
        ],
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert not done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "plain: plain"
    assert [line.split(": ", 1)[0] for line in lines[1:]] == ["new", "open", "epochs"]
    for line in lines[1:]:
        assert ": StoreError: " in line, line
        assert "'encryption' extra (AES-GCM from cryptography, which is not installed)" in line
        assert line.endswith('pip install "watchstore[encryption]"'), line
