"""Labels: Kubernetes key/value syntax, value semantics (hash, equality, order), parse, merged/without."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import labels
from tests.model import strategies as gen

VALID_KEYS = {
    "simple": "app",
    "one-char": "a",
    "digits": "123",
    "dash-underscore-dot-inside": "a-b_c.d",
    "63-char-name": "a" * 63,
    "upper-case-name": "App",
    "prefixed": "example.com/app",
    "single-label-prefix": "microseg/role",
    "prefix-with-dashes": "k8s-io.my-org/tier",
    "253-char-prefix": ".".join(["a" * 63] * 3 + ["b" * 61]) + "/x",
}

INVALID_KEYS = {
    "empty": "",
    "64-char-name": "a" * 64,
    "starts-with-dash": "-app",
    "ends-with-dot": "app.",
    "ends-with-underscore": "app_",
    "space": "my app",
    "equals-sign": "a=b",
    "colon": "a:b",
    "empty-prefix": "/app",
    "empty-name-after-prefix": "example.com/",
    "two-slashes": "a/b/c",
    "upper-case-prefix": "Example.com/app",
    "underscore-in-prefix": "my_org/app",
    "prefix-label-ends-with-dash": "example-.com/app",
    "254-char-prefix": ".".join(["a" * 63] * 3 + ["b" * 62]) + "/x",
    "trailing-newline": "app\n",
    "newline-before-slash": "example.com\n/app",
}

VALID_VALUES = {
    "empty": "",
    "simple": "prod",
    "63-chars": "v" * 63,
    "dots-dashes": "1.2.3-rc_1",
    "upper-case": "Prod",
}

INVALID_VALUES = {
    "64-chars": "v" * 64,
    "slash": "a/b",
    "starts-with-dot": ".hidden",
    "ends-with-dash": "prod-",
    "space": "pro d",
    "comma": "a,b",
    "trailing-newline": "prod\n",
}


@pytest.mark.parametrize("key", VALID_KEYS.values(), ids=VALID_KEYS.keys())
def test_valid_keys_are_accepted(key: str) -> None:
    assert labels.check_key(key) == key
    assert labels.Labels({key: "x"})[key] == "x"


@pytest.mark.parametrize("key", INVALID_KEYS.values(), ids=INVALID_KEYS.keys())
def test_invalid_keys_are_rejected(key: str) -> None:
    with pytest.raises(ValidationError, match="label key"):
        labels.check_key(key)
    with pytest.raises(ValidationError):
        labels.Labels({key: "x"})


@pytest.mark.parametrize("value", VALID_VALUES.values(), ids=VALID_VALUES.keys())
def test_valid_values_are_accepted(value: str) -> None:
    assert labels.check_value("k", value) == value
    assert labels.Labels({"k": value})["k"] == value


@pytest.mark.parametrize("value", INVALID_VALUES.values(), ids=INVALID_VALUES.keys())
def test_invalid_values_are_rejected(value: str) -> None:
    with pytest.raises(ValidationError, match="value must be empty or"):
        labels.Labels({"k": value})


def test_non_string_value_is_rejected() -> None:
    with pytest.raises(ValidationError, match="must be a string"):
        labels.Labels({"k": 3})  # type: ignore[arg-type]


@given(gen.label_keys, gen.label_values)
def test_generated_keys_and_values_are_accepted(key: str, value: str) -> None:
    assert dict(labels.Labels({key: value})) == {key: value}


@given(st.dictionaries(gen.label_keys, gen.label_values, max_size=6))
def test_insertion_order_does_not_matter(items: dict[str, str]) -> None:
    forward = labels.Labels(items)
    backward = labels.Labels(list(reversed(items.items())))
    assert forward == backward
    assert hash(forward) == hash(backward)
    assert str(forward) == str(backward)
    assert list(forward) == sorted(items)
    assert forward.pairs == tuple(sorted(items.items()))


def test_equal_labels_are_one_set_member_and_one_dict_key() -> None:
    a = labels.Labels({"env": "prod", "app": "web"})
    b = labels.Labels([("app", "web"), ("env", "prod")])
    assert {a, b} == {a}
    assert {a: 1, b: 2} == {a: 2}


def test_different_labels_are_unequal() -> None:
    base = labels.Labels({"env": "prod"})
    assert base != labels.Labels({"env": "dev"})
    assert base != labels.Labels({"env": "prod", "app": "web"})
    assert base != labels.Labels({"Env": "prod"})
    assert base != labels.Labels()


def test_labels_are_a_read_only_mapping() -> None:
    lab = labels.Labels({"env": "prod", "app": ""})
    assert len(lab) == 2
    assert lab["app"] == ""
    assert lab.get("missing") is None
    assert "env" in lab and "prod" not in lab
    with pytest.raises(KeyError):
        lab["missing"]
    with pytest.raises(TypeError):
        lab["env"] = "dev"  # type: ignore[index]


@given(st.dictionaries(gen.label_keys, gen.label_values, max_size=6), gen.label_keys)
def test_lookups_agree_with_the_pairs(items: dict[str, str], probe: str) -> None:
    lab = labels.Labels(items)
    for key in (*items, probe):
        assert lab.get(key) == items.get(key)
        assert lab.get(key, "fallback") == items.get(key, "fallback")
        assert (key in lab) == (key in items)
    assert dict(lab.items()) == items
    assert 1 not in lab
    assert lab.only({probe}) == labels.Labels({k: v for k, v in items.items() if k == probe})
    assert lab.without(probe) == labels.Labels({k: v for k, v in items.items() if k != probe})
    text = ",".join(f"{k}={v}" for k, v in sorted(items.items()))
    assert str(lab) == text
    assert str(lab) == text  # the second time from the cached text


def test_an_empty_value_is_present_not_missing() -> None:
    lab = labels.Labels({"app": ""})
    assert lab.get("app", "fallback") == ""
    assert "app" in lab


def test_labels_survive_pickling() -> None:
    lab = labels.Labels({"env": "prod", "app": "web"})
    str(lab)  # the cached text must travel or be rebuilt, not go stale
    again = pickle.loads(pickle.dumps(lab))
    assert again == lab and hash(again) == hash(lab)
    assert again.get("env") == "prod" and str(again) == "app=web,env=prod"


def test_ordering_is_by_sorted_pairs() -> None:
    ordered = [
        labels.Labels(),
        labels.Labels({"a": ""}),
        labels.Labels({"a": "1"}),
        labels.Labels({"a": "1", "b": "1"}),
        labels.Labels({"a": "2"}),
        labels.Labels({"b": "0"}),
    ]
    assert sorted(reversed(ordered)) == ordered
    assert ordered[1] < ordered[2] and not ordered[2] < ordered[1]


PARSE_CASES = {
    "two-pairs": ("a=b,c=d", {"a": "b", "c": "d"}),
    "spaces-around": (" a = b , c=d ", {"a": "b", "c": "d"}),
    "empty-value": ("a=", {"a": ""}),
    "empty-text": ("", {}),
    "stray-commas": (",a=b,,", {"a": "b"}),
    "prefixed-key": ("example.com/app=web", {"example.com/app": "web"}),
    "later-wins": ("a=1,a=2", {"a": "2"}),
}


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES.values(), ids=PARSE_CASES.keys())
def test_parse(text: str, expected: dict[str, str]) -> None:
    assert labels.Labels.parse(text) == labels.Labels(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [("a", "expected key=value"), ("a=b,c", "expected key=value"), ("a=b=c", "value"), ("=b", "label key")],
    ids=["no-equals", "second-without-equals", "equals-in-value", "empty-key"],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        labels.Labels.parse(text)


@given(st.dictionaries(gen.label_keys, gen.label_values, max_size=6))
def test_str_parses_back(items: dict[str, str]) -> None:
    lab = labels.Labels(items)
    assert labels.Labels.parse(str(lab)) == lab


def test_merged_adds_and_replaces_without_changing_the_original() -> None:
    base = labels.Labels({"env": "dev", "app": "web"})
    merged = base.merged({"env": "prod", "team": "blue"})
    assert merged == labels.Labels({"env": "prod", "app": "web", "team": "blue"})
    assert base == labels.Labels({"env": "dev", "app": "web"})


def test_merged_validates_the_new_pairs() -> None:
    with pytest.raises(ValidationError):
        labels.Labels({"a": "b"}).merged({"bad key": "x"})


def test_without_drops_named_keys_and_ignores_missing_ones() -> None:
    base = labels.Labels({"env": "prod", "app": "web", "team": "blue"})
    assert base.without("env", "team", "missing") == labels.Labels({"app": "web"})
    assert base.without() == base
    assert len(base) == 3


def test_repr_names_the_labels() -> None:
    assert repr(labels.Labels({"b": "2", "a": "1"})) == "Labels(a=1,b=2)"
