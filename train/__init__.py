"""FaceScope training: recipes, the engine and its per-method steps, losses, validation on
held-out training identities, and publishing runs into the zoo.

Training consumes the packed crops that `python -m train.prepare` writes. Everything needed
to turn a photo into an embedding and a pair list into metrics lives in `zoo` (`zoo.data`,
`zoo.evaluate`, `zoo.metrics`, `zoo.peers`), so the app and the analyses never import this
package.
"""
