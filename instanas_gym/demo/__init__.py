"""The live demo page (``instanas-gym demo``): which architecture the controller picks for each image.

A layer above the core, like ``agents/``: :mod:`.model` finds or exports the served model,
:mod:`.state` holds what the page shows and classifies requests with the ONNX Runtime engine,
:mod:`.upload` turns an uploaded file into the data set's image, :mod:`.server` is the web app.
"""
