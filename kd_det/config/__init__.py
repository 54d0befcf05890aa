"""Configuration for both tasks (Detectron2-free except :mod:`.detection`).

* :mod:`.schema` — the ``KD.*`` keys both tasks share (``add_kd_config``), the ``KD.LOSSES`` spec list, the one
  loader (``load_kd_config``: custom imports, ``_BASE_`` chain, loss-entry overrides, validation), method labels;
* :mod:`.yaml_chain` — the one reader of a yaml file's ``_BASE_`` chain;
* :mod:`.migration` — the one module that still reads the old config forms;
* :mod:`.detection` — Detectron2's defaults plus kd_det's detection keys (``get_cfg``, ``load_config``);
* :mod:`.classification` — the classification defaults (``get_cls_cfg``, ``load_cls_config``).
"""
