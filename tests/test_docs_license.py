"""The package can be adopted: an MIT LICENSE file, named in the metadata of the built wheel
(PEP 639: ``License-Expression`` and ``License-File``) and shipped inside it."""

from __future__ import annotations

import email.parser
import pathlib
import zipfile

from hatchling.builders.wheel import WheelBuilder

ROOT = pathlib.Path(__file__).parent.parent


def test_the_license_file_is_mit_for_the_watchstore_authors() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the watchstore authors" in text
    assert "Permission is hereby granted, free of charge" in text


def test_the_built_wheel_names_its_license_and_carries_the_file(tmp_path: pathlib.Path) -> None:
    wheel = pathlib.Path(next(iter(WheelBuilder(str(ROOT)).build(directory=str(tmp_path)))))
    with zipfile.ZipFile(wheel) as archive:
        info = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        shipped = archive.read(f"{info}/licenses/LICENSE").decode()
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert shipped == (ROOT / "LICENSE").read_text()
