"""Generated gRPC stubs for proto/tellm/v1 (built by grpcio-tools; see tellm.v1 build notes)."""
