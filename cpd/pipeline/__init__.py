"""The DVC pipeline's own logic that needs no torch: params sections, the dataset description, the summary.

The stages (``stages/*.py``) are thin: each reads its section of ``params.yaml`` through
:func:`cpd.pipeline.params.read_section`, calls one function of ``cpd`` (torch-free ones here, the
training and evaluation ones in :mod:`cpd.mm`, ONNX in :mod:`cpd.export`) and writes its outputs.
"""
