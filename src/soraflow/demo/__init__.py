"""The demo corpus: deterministic synthetic videos with known ground truth.

No machine of the project can download videos, so every later stage (scene cuts, filters,
training, prompt-following evaluation) is checked against this generated corpus.

- :mod:`~soraflow.demo.vocab`: shapes, colours, directions, backgrounds, ``caption_for``;
- :mod:`~soraflow.demo.spec`: ``SceneSpec``/``MediaSpec`` and ``plan_corpus`` (seeded);
- :mod:`~soraflow.demo.render`: ``render_scene_frames`` and the geometry helpers;
- :mod:`~soraflow.demo.writer`: H.264 and still-image writing;
- :mod:`~soraflow.demo.generator`: ``generate_corpus`` (files, sidecars, manifests).

Submodules are imported explicitly (this package imports nothing heavy, because
``soraflow.config`` imports :mod:`soraflow.demo.config`).
"""
