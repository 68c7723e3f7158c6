"""Generated gRPC stubs of proto/tellm/v1 (protobuf package ``tellm.v1``), built by setup.py with grpcio-tools."""
