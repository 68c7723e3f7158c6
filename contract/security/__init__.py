"""Security of tellm's gRPC servers and clients: the audit trail of admin calls (``audit``), TLS
credentials (``tls``) and token authentication with roles (``auth``)."""
