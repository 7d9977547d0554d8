"""gRPC services that adapt the :mod:`tandem` core to the network."""
