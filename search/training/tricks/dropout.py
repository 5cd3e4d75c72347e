"""Dropout before the classification head (a model argument)."""

from __future__ import annotations

from search.training.trick import Field, Trick, number

TRICK = Trick(
    "dropout", "Dropout before the classification head.",
    (Field("dropout", "float", 0.0, number(0.0, 1.0, high_open=True),
           "dropout before the classification head", sample="float", off=0.0),),
    order=90, model_kwargs=lambda cfg: {"dropout": cfg.dropout})
