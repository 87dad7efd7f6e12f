"""Generated gRPC/Protobuf code for ``cis.raftdb.v1`` (do not edit; see ``database.proto``).

Regenerate from the repository root with::

    .venv/bin/python -m grpc_tools.protoc -I src \\
        --python_out=src --mypy_out=src --grpc_python_out=src --mypy_grpc_out=src \\
        src/cis/cluster/raftdb/proto/database.proto
"""
