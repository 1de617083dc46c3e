"""The shared Keras object machinery (kconv._registry), on a toy family."""

from __future__ import annotations

import dataclasses

import pytest

from kconv._registry import KerasObject, Registry


class Widget(KerasObject):
    def __call__(self, x):
        return x


@dataclasses.dataclass(frozen=True)
class Knob(Widget):
    turns: int = 1
    axes: tuple = (0, 1)
    preset: str = dataclasses.field(default="fixed", init=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Unlisted(Widget):
    pass


WIDGETS = Registry("widget", Widget, (Knob,), {"knob": Knob}, module="keras.widgets")
ITEMS = Registry("item", Widget, (Knob,), {}, module="keras.items")


def test_get_config_skips_non_init_fields_and_lists_tuples():
    assert Knob(turns=3).get_config() == {"turns": 3, "axes": [0, 1]}


def test_from_config_round_trip_and_unknown_keys():
    assert Knob.from_config({"turns": 2, "axes": (1,)}) == Knob(2, (1,))
    with pytest.raises(TypeError, match=r"Knob: unexpected config key\(s\) \['preset'\]; "
                       r"accepted keys are \['axes', 'turns'\]\."):
        Knob.from_config({"preset": "other"})


def test_names():
    assert list(WIDGETS.by_name) == ["Knob", "knob"]
    assert WIDGETS.lookup("knob") is Knob
    with pytest.raises(ValueError, match=r"Unknown widget 'Knob2' \(names are case-sensitive\)"
                       r"\. Valid names: \['Knob', 'knob'\]\."):
        WIDGETS.lookup("Knob2")


def test_serialize():
    assert WIDGETS.serialize(Knob()) == {
        "module": "keras.widgets",
        "class_name": "Knob",
        "config": {"turns": 1, "axes": [0, 1]},
        "registered_name": None,
    }
    for bad in (Unlisted(), Knob, lambda x: x):
        with pytest.raises(TypeError, match="only kconv widgets have a Keras config"):
            WIDGETS.serialize(bad)


@pytest.mark.parametrize(
    "config",
    [
        "knob",
        {"class_name": "Knob"},
        {"class_name": "Knob", "config": None},
        {"module": "anything", "class_name": "Knob", "config": {}, "registered_name": None},
    ],
)
def test_deserialize_forms(config):
    assert WIDGETS.deserialize(config) == Knob()


@pytest.mark.parametrize(
    "registry, article", [(WIDGETS, "A widget"), (ITEMS, "An item")]
)
def test_deserialize_errors(registry, article):
    with pytest.raises(ValueError, match=f"^{article} config dict needs a string 'class_name'"):
        registry.deserialize({"config": {}})
    with pytest.raises(TypeError, match=f"^{article} config must be a name or a dict; got 3 "):
        registry.deserialize(3)
    noun = article.split()[1]
    with pytest.raises(TypeError, match=f"The 'config' of {noun} 'Knob' must be a dict"):
        registry.deserialize({"class_name": "Knob", "config": [1]})


def test_get():
    def fn(x):
        return x

    assert WIDGETS.get(None) is None
    assert WIDGETS.get("knob") == Knob()
    assert WIDGETS.get({"class_name": "Knob", "config": {"turns": 5}}) == Knob(turns=5)
    assert WIDGETS.get(Knob) == Knob()
    assert WIDGETS.get(Unlisted) == Unlisted()  # any subclass of the base
    assert WIDGETS.get(fn) is fn
    knob = Knob()
    assert WIDGETS.get(knob) is knob
    with pytest.raises(TypeError, match="Could not interpret widget identifier 3 of type int"):
        WIDGETS.get(3)
