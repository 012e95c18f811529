"""Settings declared in signatures: derivation, validation, command-line parsing, renamed names."""

from __future__ import annotations

from typing import Annotated

import pytest

from advlab.settings import (
    Check,
    NonNegativeFloat,
    NotASetting,
    OneOf,
    PositiveInt,
    Range,
    docstring_args,
    rename_deprecated,
    settings_of,
    validate_all,
)


def _example(
    model,
    x,
    *,
    steps: PositiveInt = 40,
    step_size: NonNegativeFloat | None = None,
    rho: Annotated[float, Range(0, 1, strict_min=True)] = 0.75,
    loss: Annotated[str, OneOf(("ce", "dlr"))] = "ce",
    random_start: bool = True,
    start: Annotated[object, NotASetting()] = None,
    custom: Annotated[object, Check(lambda name, v: v * 2)] = 1,
    goal=None,
):
    """An example.

    Args:
        model: not a setting (positional).
        x: not a setting either.
        steps: iterations (40). The text goes on
            over two lines.
        step_size: step length.
        rho: a fraction in (0, 1].
        loss: which loss.
        random_start: start from a random point.
        start: data, not a setting.
        custom: checked by a function.
        goal: excluded by the caller.

    Returns:
        nothing.
    """


def test_settings_come_from_the_keyword_only_parameters_in_order():
    s = settings_of(_example, exclude=("goal",))
    assert list(s) == ["steps", "step_size", "rho", "loss", "random_start", "custom"]
    assert s["steps"].default == 40 and s["steps"].type is int and not s["steps"].optional
    assert s["step_size"].optional and s["step_size"].type is float
    assert s["steps"].doc == "iterations (40). The text goes on over two lines."
    assert s["random_start"].type is bool


def test_validation_names_the_setting_and_the_range():
    s = settings_of(_example, exclude=("goal",))
    with pytest.raises(ValueError, match="^steps: expected an int >= 1, got 0"):
        s["steps"].validate(0)
    with pytest.raises(TypeError, match="^steps: expected an int"):
        s["steps"].validate(2.5)
    with pytest.raises(ValueError, match=r"^rho: expected a number > 0"):
        s["rho"].validate(0.0)
    with pytest.raises(ValueError, match=r"^rho: expected a number <= 1"):
        s["rho"].validate(1.5)
    with pytest.raises(ValueError, match=r"^loss: expected one of \['ce', 'dlr'\]"):
        s["loss"].validate("hinge")
    with pytest.raises(TypeError, match="^random_start: expected True or False"):
        s["random_start"].validate("yes")
    assert s["step_size"].validate(None) is None
    assert s["custom"].validate(3) == 6  # the Check's own result
    assert s["rho"].validate(1) == 1.0 and isinstance(s["rho"].validate(1), float)


def test_unknown_and_synonym_names_are_refused_with_the_shared_name():
    s = settings_of(_example, exclude=("goal",))
    with pytest.raises(TypeError, match="'n_iter' \\(did you mean 'steps'\\?\\)"):
        validate_all("example", s, {"n_iter": 3})
    with pytest.raises(TypeError, match="no setting 'stpes'.*Did you mean 'steps'"):
        validate_all("example", s, {"stpes": 3})


def test_command_line_text_is_read_by_the_setting_type():
    s = settings_of(_example, exclude=("goal",))
    assert s["steps"].parse("12") == 12
    assert s["step_size"].parse("8/255") == pytest.approx(8 / 255)
    assert s["step_size"].parse("none") is None
    assert s["random_start"].parse("false") is False and s["random_start"].parse("yes") is True
    assert s["loss"].parse("dlr") == "dlr"
    with pytest.raises(ValueError, match="steps: expected a whole number"):
        s["steps"].parse("ten")
    with pytest.raises(ValueError, match="random_start: expected true or false"):
        s["random_start"].parse("maybe")


def test_renamed_names_warn_and_are_translated():
    with pytest.warns(FutureWarning, match="'n_iter' is now called 'steps'"):
        assert rename_deprecated("x", {"n_iter": 5, "rho": 1}, {"n_iter": "steps"}) == {"steps": 5, "rho": 1}
    with pytest.raises(TypeError, match="both 'n_iter' and 'steps'"):
        rename_deprecated("x", {"n_iter": 5, "steps": 5}, {"n_iter": "steps"})
    assert rename_deprecated("x", {"steps": 5}, {"n_iter": "steps"}) == {"steps": 5}


def test_docstring_args_reads_google_style_sections():
    doc = """Summary.

    Args:
        a: first.
        b (int): second,
            continued.
        **rest: the others.

    Returns:
        x.
    """
    import inspect

    assert docstring_args(inspect.cleandoc(doc)) == {"a": "first.", "b": "second, continued.", "rest": "the others."}
