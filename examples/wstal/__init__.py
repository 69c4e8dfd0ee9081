"""Parts of the reference two-stage WSTAL detector in ``examples/thumos_two_stage.py``.

The modules are deliberately independent of each other beyond the shared data structures in
:mod:`.data`, so each can be read (and tested) on its own:

- ``data``: the :class:`~.data.Video` / :class:`~.data.WSTALDataset` structures every other part uses.
- ``thumos``: the real THUMOS14 loader (``Thumos14reduced`` layout) with a restricted unpickler.
- ``synthetic``: a seeded THUMOS-like generator, the example's default data.
- ``synthetic_gt``: a second synthetic family, features around the ground truth of an annotation folder.
- ``evaluation``: ActivityNet-style temporal detection mAP, with the THUMOS community options.
- ``recall``: proposal quality, average recall against proposals per video (AR@AN).
- ``io``: ActivityNet-style detection JSON.
- ``proposals``: grouping, outer-inner contrast, 1-D NMS / soft-NMS and RoI align, in torch.

The package is imported as the top-level package ``wstal`` (``examples/`` on ``sys.path``).
"""
