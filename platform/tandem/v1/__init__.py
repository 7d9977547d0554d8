"""Generated protobuf and gRPC code for package ``tandem.v1`` (see scripts/gen_proto.py)."""
