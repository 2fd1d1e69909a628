"""carbonbench inside other libraries' training loops.

``hf_trainer``: a transformers ``TrainerCallback`` (the ``transformers`` extra). Nothing
here is imported by ``import carbonbench`` or ``carbonbench.integrations``: each module
imports its library itself, so carbonbench works without them.
"""
