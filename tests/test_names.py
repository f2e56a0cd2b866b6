"""Tensor names: what is accepted, what is refused, and that no name ever reaches outside a store.

Names never become file paths, but a store handed over by a stranger and a name typed by a user
are both untrusted, so the rules are checked on every write and every read.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorcas
from tensorcas import ContentStoreReader, ContentStoreWriter, InvalidNameError, TensorNotFoundError
from tensorcas.format import MAX_NAME_BYTES, name_matches, validate_name, validate_prefix

VALID = [
    "a",
    "model/layer.0/weight",
    "model/layer.0/bias",
    "x.y.z",
    "..a",  # dots are fine inside a component, only '.' and '..' themselves are refused
    "a../b...",
    "with space/and-dash_under",
    "модель/вес",
    "模型/权重",
    "emoji/🙂",
    "é" * (MAX_NAME_BYTES // 2),  # exactly the byte limit (2 bytes each in UTF-8)
]

INVALID = [
    "",
    ".",
    "..",
    "../escape",
    "a/../b",
    "a/./b",
    "a/..",
    "/abs",
    "trailing/",
    "a//b",
    "/",
    "a\x00b",
    "a\\b",
    "..\\..\\escape",
    "tab\there",
    "new\nline",
    "del\x7f",
    "bell\x07",
    "x" * (MAX_NAME_BYTES + 1),
    "é" * (MAX_NAME_BYTES // 2 + 1),  # too long in bytes though not in characters
    "lone\ud800surrogate",
]


def tree(path: str) -> set[str]:
    found = set()
    for root, dirs, files in os.walk(path):
        for entry in dirs + files:
            found.add(os.path.relpath(os.path.join(root, entry), path))
    return found


@pytest.mark.parametrize("name", VALID, ids=lambda n: repr(n[:20]))
def test_valid_names_round_trip(loc, name):
    t = torch.arange(3)
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor(name, t)
    reader = ContentStoreReader(loc)
    assert reader.list_tensors() == [name]
    assert torch.equal(reader.read_tensor(name), t)
    assert validate_name(name) == name


def test_a_name_and_names_below_it_coexist(loc):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("a", torch.tensor([1]))
        writer.write_tensor("a/b", torch.tensor([2]))
        writer.write_tensor("a/b/c", torch.tensor([3]))
        writer.write_tensor("ab", torch.tensor([4]))
    reader = ContentStoreReader(loc)
    assert [reader.read_tensor(n).item() for n in ("a", "a/b", "a/b/c", "ab")] == [1, 2, 3, 4]
    assert reader.list_tensors("a") == ["a", "a/b", "a/b/c"]
    assert reader.list_tensors("a/") == ["a/b", "a/b/c"]
    assert reader.list_tensors("a/b") == ["a/b", "a/b/c"]
    assert reader.list_tensors() == ["a", "a/b", "a/b/c", "ab"]


@pytest.mark.parametrize("name", INVALID, ids=repr)
def test_invalid_names_refused_everywhere(tmp_path, name):
    loc = str(tmp_path / "store")
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("ok", torch.zeros(1))
        before = tree(str(tmp_path))
        with pytest.raises(InvalidNameError) as info:
            writer.write_tensor(name, torch.ones(2))
        assert isinstance(info.value, ValueError) and isinstance(info.value, tensorcas.StoreError)
        assert str(info.value)  # says what is wrong
        with pytest.raises(InvalidNameError):
            writer.delete_tensor(name)
    assert tree(str(tmp_path)) == before  # nothing written for the bad name, inside or outside
    reader = ContentStoreReader(loc)
    with pytest.raises(InvalidNameError):
        reader.read_tensor(name)
    with pytest.raises(InvalidNameError):
        reader.read_tensor_metadata(name)
    assert reader.list_tensors() == ["ok"]
    with pytest.raises(InvalidNameError):
        validate_name(name)


@pytest.mark.parametrize("name", [None, 1, b"bytes", ("a",), ["a"]], ids=repr)
def test_non_str_names_refused(loc, name):
    with ContentStoreWriter(loc) as writer, pytest.raises(InvalidNameError) as info:
        writer.write_tensor(name, torch.ones(1))  # type: ignore[arg-type]
    assert type(name).__name__ in str(info.value)
    with pytest.raises(InvalidNameError):
        ContentStoreReader(loc).read_tensor(name)  # type: ignore[arg-type]


def test_bad_names_never_create_anything_outside(tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    loc = str(outer / "store")
    with ContentStoreWriter(loc) as writer:
        for name in ("../../pwned", "/tmp/pwned", "..", "a/../../pwned", "..\\pwned"):
            with pytest.raises(InvalidNameError):
                writer.write_tensor(name, torch.ones(1))
        # A valid name that looks like a path stays a record: no directory is made for it.
        writer.write_tensor("etc/passwd", torch.ones(1))
    assert sorted(os.listdir(tmp_path)) == ["outer"]
    assert sorted(os.listdir(outer)) == ["store"]
    assert not any("pwned" in p or "passwd" in p for p in tree(str(tmp_path)))
    assert set(os.listdir(loc)) <= {"blobs", "logs", "packs", "tensorcas.json"}


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b/", "模型"])
def test_valid_prefixes(prefix):
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["/", "/a", "a//", "../", "a/../", "a\\", "x\x00", None, 3], ids=repr
)
def test_invalid_prefixes(loc, prefix):
    with pytest.raises(InvalidNameError):
        validate_prefix(prefix)
    with ContentStoreWriter(loc):
        pass
    with pytest.raises(InvalidNameError):
        ContentStoreReader(loc).list_tensors(prefix)  # type: ignore[arg-type]


def test_tensor_not_found_is_a_key_error_naming_the_tensor(loc):
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("present", torch.ones(1))
        writer.write_tensor("gone", torch.ones(1))
        writer.delete_tensor("gone")
    reader = ContentStoreReader(loc)
    with pytest.raises(TensorNotFoundError) as info:
        reader.read_tensor("model/missing")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, tensorcas.StoreError)
    assert "model/missing" in str(err)
    assert not str(err).startswith('"')  # readable, not KeyError's quoted repr
    with pytest.raises(KeyError):
        reader.read_tensor("gone")
    with pytest.raises(TensorNotFoundError, match="deleted"):
        reader.read_tensor("gone")
    assert "model/missing" not in reader and "present" in reader
    with (
        ContentStoreWriter(loc) as writer,
        pytest.raises(TensorNotFoundError, match="never-written"),
    ):
        writer.delete_tensor("never-written")


# -- names under a prefix -------------------------------------------------------------------------

_COMPONENTS = st.sampled_from(["a", "a-x", "a.b", "ab", "b", "é", "a/b"])
_NAMES = st.lists(_COMPONENTS, min_size=1, max_size=3).map("/".join)
_PREFIXES = st.one_of(st.just(""), _NAMES, _NAMES.map(lambda n: n + "/"))
_STEPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete", "list"]), _NAMES, _PREFIXES), max_size=40
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_STEPS)
def test_names_under_a_prefix_are_those_a_scan_finds(tmp_path_factory, steps):
    """Names under a prefix come from sorted runs, kept up to date as names are added (the
    index never scans every name); they must be exactly what a scan finds, in writing order,
    whatever was written, deleted and asked in between."""
    loc = str(tmp_path_factory.mktemp("prefix"))
    with ContentStoreWriter(loc) as writer:
        writer.write_tensor("seed", torch.zeros(1))
        reader = ContentStoreReader(loc)
        for step, name, prefix in steps:
            if step == "put":
                writer.write_tensor(name, torch.zeros(1))
            elif step == "delete" and name in reader.list_tensors():
                writer.delete_tensor(name)
            else:
                expected = [n for n in reader.list_tensors() if name_matches(n, prefix)]
                assert reader.list_tensors(prefix) == expected, prefix
