"""FaceScope training and evaluation.

`train.data` turns face datasets as researchers have them into aligned 112x112 RGB crops
(readers, alignment, degradations, crop cache, named protocols); `train.metrics` and
`train.evaluate` turn a model's embeddings of those crops into verification numbers; the
training engine consumes the packed crops that `python -m train.data.prepare` writes.
"""
