"""The forms of the admin actions that need more than a click: retry from a step, send a signal."""

from __future__ import annotations

from typing import Any

from django import forms


class RetryFromForm(forms.Form):
    """Which step to run again (with everything after it) in each selected instance."""

    step = forms.ChoiceField(
        label="Run again from step",
        help_text="Its checkpoint and every later one are dropped; earlier ones are kept.",
    )

    def __init__(self, *args: Any, steps: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["step"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(step, step) for step in steps]


class SignalForm(forms.Form):
    """A signal for each selected instance; its payload must be JSON."""

    name = forms.CharField(label="Signal name", max_length=255)
    payload = forms.JSONField(
        label="Payload (JSON)",
        required=False,
        initial=None,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60}),
        help_text="Any JSON value: an object, a list, a string in quotes, a number, null.",
    )
