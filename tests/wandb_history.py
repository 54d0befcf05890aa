"""Reading an offline W&B run in tests (what SOLVER.WANDB.ENABLED logged)."""
import os


def read_wandb_history(run_dir):
    """The ``history`` rows (dicts, ``_step`` included) of the one offline W&B run under ``run_dir/wandb``.

    The ``.wandb`` file is W&B's record log: a 7-byte header (``:W&B``, magic, version), then LevelDB-log framed
    records (32 KiB blocks; each chunk: crc32 u32, length u16, type u8 = full / first / middle / last) holding
    protobuf ``wandb.proto.wandb_internal_pb2.Record`` messages.
    """
    import glob
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    block, head, pos, chunks, rows = 32768, 7, 7, b"", []
    while pos + head <= len(data):
        if block - pos % block < head:  # block trailer too short for a header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + head])
        chunks += data[pos + head:pos + head + length]
        pos += head + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows
