"""Saved-meter forms: rename (a nickname) and remove."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField
from wtforms.validators import Length

from billvend.web.forms import PlainText


class RenameForm(FlaskForm):
    nickname = StringField(
        "Nickname",
        validators=[Length(max=60, message="Use at most 60 characters."), PlainText()],
        description="Like \u201cShop\u201d or \u201cMum\u2019s flat\u201d. Leave empty to show the name on the meter.",
    )
    submit = SubmitField("Save name")


class RemoveForm(FlaskForm):
    submit = SubmitField("Remove")
