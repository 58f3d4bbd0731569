"""HTTP/JSON for every unary and server-streaming RPC, transcoded from the protos' google.api.http
annotations onto the gRPC server of the same process (`modelplane serve --http-address`)."""
