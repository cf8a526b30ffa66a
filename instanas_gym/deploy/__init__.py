"""Deployment: any architecture of a supernet as a standalone network and a static ONNX graph
(:mod:`.export`), and the instance-aware inference engine that serves a controller and its
architectures with ONNX Runtime, without PyTorch (:mod:`.engine`)."""
