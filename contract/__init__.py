"""The TF-free contract every other package builds on: the tf.Example features, the exported
model's signature, tensor and asset names, the labels file format, and the model name.

It imports nothing but the standard library, so light clients and tests can share it."""
