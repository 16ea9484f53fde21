"""Registry behaviour and ArchSpec round trips."""

from __future__ import annotations

import pytest

from das.errors import DasError
from das.registry import Registry
from das.spec import ArchSpec


def test_registry_refuses_duplicates_and_suggests_close_names() -> None:
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    def alpha() -> str:
        return "a"

    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", alpha)
    assert reg.create("alpha") == "a" and reg.names() == ["alpha"] and "alpha" in reg
    with pytest.raises(DasError, match="unknown widget 'alpah': did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(DasError, match="known: alpha"):
        reg.get("zzz")


def test_registrations_for_a_block_are_undone() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("kept", 0)
    with reg.registered("alpha", 1, note="x"):
        assert reg.get("alpha") == 1 and reg.meta("alpha") == {"note": "x"}
    assert "alpha" not in reg
    with reg.temporary():
        reg.add("beta", 2)
        assert reg.unregister("kept") == 0
    assert reg.names() == ["kept"] and reg.meta("kept") == {}
    with pytest.raises(DasError, match="unknown thing 'kepd'"):
        reg.unregister("kepd")


def test_archspec_is_hashable_and_round_trips_through_json(tmp_path) -> None:
    spec = ArchSpec.make("nb201", {"arch": "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"}, {"C": 4, "N": 1})
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert len({spec, ArchSpec.from_json(spec.to_json())}) == 1
    spec.save(tmp_path / "a.json", score=1.5)
    assert ArchSpec.load(tmp_path / "a.json") == spec
    assert spec.build(3)(__import__("torch").randn(1, 3, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize("text", ["{}", '{"space": "nb201"}', "[1, 2]"])
def test_malformed_specs_are_one_line_errors(text) -> None:
    with pytest.raises(DasError):
        ArchSpec.from_json(text)


def test_missing_spec_file_says_to_run_search(tmp_path) -> None:
    with pytest.raises(DasError, match="run search.py first"):
        ArchSpec.load(tmp_path / "nope.json")


def test_a_das_error_from_a_dataloader_worker_keeps_its_one_line() -> None:
    """DataLoader rebuilds a worker's exception from its traceback text; the user still sees one line."""
    from torch.utils.data import DataLoader, Dataset

    class Refuses(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int):
            raise DasError("cannot decode image x.jpg (truncated): replace it")

    with pytest.raises(DasError) as err:
        next(iter(DataLoader(Refuses(), num_workers=1)))
    assert str(err.value) == "cannot decode image x.jpg (truncated): replace it"
    assert str(DasError("Caught in the main process: kept as it is")) == "Caught in the main process: kept as it is"
