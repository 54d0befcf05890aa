"""The detection task on Detectron2: distillation meta-architectures and the teacher (:mod:`.modeling`),
dataset registration and checked loaders (:mod:`.data`), trainer, checkpointer and launcher (:mod:`.engine`)."""
