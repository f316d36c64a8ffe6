"""Uploads a batch the way examples/python/council_client.py does, one record per message, as
fast as grpc-python can send, and reports the outcome as one JSON line.

A council's nightly extract is sent like this; the registry must keep reading while it commits
(an HTTP/2 server that stops reading lets small DATA frames pile up until the connection is cut
off with ENHANCE_YOUR_CALM).

Usage: fast_upload.py ADDR TOKEN --records N --batch-id ID [--invalid]
Exit 0 when the upload answered; the JSON line carries the counts and the seconds it took.
"""

import argparse
import importlib
import json
import pathlib
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"


def generate(out: pathlib.Path) -> None:
    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "cpis").rglob("*.proto"))
    files += ["google/type/date.proto"]
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed for {files}")


def test_range_numbers():
    """Valid NHS numbers of the never-issued 999 test range, in order (Modulus 11)."""
    for stem in range(999_000_000, 1_000_000_000):
        digits = [int(d) for d in str(stem)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        if check == 11:
            check = 0
        if check != 10:
            yield f"{stem}{check}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("addr")
    parser.add_argument("token")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--invalid", action="store_true", help="send records the registry rejects")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        generate(out)
        sys.path.insert(0, str(out))
        common = importlib.import_module("cpis.common.v1.common_pb2")
        council = importlib.import_module("cpis.registry.v1.council_pb2")
        council_grpc = importlib.import_module("cpis.registry.v1.council_pb2_grpc")
        date = importlib.import_module("google.type.date_pb2")

        def messages():
            yield council.UploadBatchRequest(header=council.BatchHeader(batch_id=opts.batch_id))
            numbers = test_range_numbers()
            for i in range(opts.records):
                record = common.ChildRecord(
                    nhs_number=next(numbers),
                    local_case_id=f"C{i}",
                    # --invalid: every record rejected (no given name).
                    given_name="" if opts.invalid else "Test",
                    family_name="Child",
                    date_of_birth=date.Date(year=2020, month=5, day=1),
                    child_protection_plan=common.ChildProtectionPlan(
                        period=common.PlanPeriod(start_date=date.Date(year=2025, month=1, day=10))
                    ),
                )
                yield council.UploadBatchRequest(record=record)

        channel = grpc.insecure_channel(opts.addr)
        stub = council_grpc.CouncilServiceStub(channel)
        started = time.monotonic()
        try:
            answer = stub.UploadBatch(messages(), metadata=[("authorization", f"Bearer {opts.token}")], timeout=600)
        except grpc.RpcError as e:
            print(json.dumps({"error": e.code().name, "details": e.details(), "seconds": time.monotonic() - started}))
            sys.exit(1)
        seconds = time.monotonic() - started
        result = answer.result
        print(
            json.dumps(
                {
                    "received": result.received_count,
                    "accepted": result.accepted_count,
                    "rejected": result.rejected_count,
                    "rejections_in_answer": len(result.rejections),
                    "seconds": round(seconds, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
