"""StateLayout: the one owner of paths under CARSDEPO_HOME refuses names and links that leave it."""

from __future__ import annotations

from pathlib import Path

import pytest

from carsdepo_assets.state import (
    InvalidName,
    OutsideStateFolder,
    StateLayout,
    default_batch_name,
    validate_batch_name,
)

HOSTILE = ["", "..", "../evil", "../../evil", "/tmp/evil", "a/b", ".hidden", "x" * 129,
           "a\0b", "a\nb", "-leading-dash"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_batch_names_never_become_paths(tmp_path: Path, name: str) -> None:
    layout = StateLayout(tmp_path / "home")
    for build in (layout.manifest_path, layout.batch_profile_path, layout.drift_report_path,
                  layout.decision_path, layout.prediction_path, layout.quarantine_folder,
                  layout.landing_folder, layout.contact_sheet_path, layout.batch_lock):
        with pytest.raises(InvalidName, match="invalid batch name"):
            build(name)
    assert not (tmp_path / "home").exists()


def test_a_name_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidName):
        validate_batch_name(None)


def test_a_state_sub_folder_linked_outside_is_refused(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "home").ensure()
    (tmp_path / "outside").mkdir()
    layout.profiles.rmdir()
    (tmp_path / "home" / "profiles").symlink_to(tmp_path / "outside")
    with pytest.raises(OutsideStateFolder, match="outside the state folder"):
        layout.batch_profile_path("b1")


def test_valid_names_give_paths_inside_the_state_folder(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "home")
    assert layout.manifest_path("lot-12_v1.2") == tmp_path / "home/manifests/lot-12_v1.2.json"
    assert layout.batch_profile_path("b1") == tmp_path / "home/profiles/batches/b1.bin"


def test_a_folder_name_with_spaces_gets_a_valid_default_batch_name(tmp_path: Path) -> None:
    assert default_batch_name(tmp_path / "Lot 12 (June)") == "Lot-12-June"
    assert default_batch_name(tmp_path / ".hidden") == "hidden"
    assert default_batch_name(tmp_path / "((()))") == "batch"
