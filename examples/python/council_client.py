"""A council's CP-IS client in Python, on stubs generated from proto/ (see build.py).

Two things a council's case system does:

    upload FILE      send an extract (the CSV columns `cpis upload` documents) as one batch and
                     print the outcome and every rejected row (by line);
    watch            stream access and inactive-NHS-number notifications live, acknowledging
                     each after printing it, resuming from the last acknowledged sequence.

The registry address comes from --registry or CPIS_REGISTRY_URL (default 127.0.0.1:50051);
the council's bearer token from --token or CPIS_COUNCIL_TOKEN, as `cpis` reads it (`cpis dev`
prints the export). An https:// address is reached over TLS trusting --ca-cert (CPIS_CA_CERT); a registry that
asks councils for a client certificate gets --client-cert and --client-key (CPIS_CLIENT_CERT,
CPIS_CLIENT_KEY). Exit codes: 0 done, 1 error (the gRPC code, reason and field are printed),
3 rows rejected.
"""

import argparse
import csv
import hashlib
import os
import pathlib
import sys

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import build  # noqa: E402

build.ensure()

from cpis.common.v1 import common_pb2, errors_pb2  # noqa: E402
from cpis.registry.v1 import council_pb2, council_pb2_grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from google.type import date_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

LEGAL_BASIS = {
    "31": common_pb2.LOOKED_AFTER_LEGAL_BASIS_SECTION_31_CARE_ORDER,
    "38": common_pb2.LOOKED_AFTER_LEGAL_BASIS_SECTION_38_INTERIM_CARE_ORDER,
    "20": common_pb2.LOOKED_AFTER_LEGAL_BASIS_SECTION_20_VOLUNTARY_ACCOMMODATION,
}


class Malformed(Exception):
    """A row that cannot be sent; reported by line."""


def date(row: dict, column: str):
    text = (row.get(column) or "").strip()
    if not text:
        return None
    parts = text.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise Malformed(f"{column}: {text!r} is not a date in the form YYYY-MM-DD")
    return date_pb2.Date(year=int(parts[0]), month=int(parts[1]), day=int(parts[2]))


def period(row: dict, prefix: str):
    dates = {k: date(row, f"{prefix}_{k}") for k in ("start_date", "end_date", "delete_date")}
    if not any(dates.values()):
        return None
    return common_pb2.PlanPeriod(**{k: v for k, v in dates.items() if v is not None})


def record(row: dict) -> common_pb2.ChildRecord:
    rec = common_pb2.ChildRecord(
        nhs_number=(row.get("nhs_number") or "").replace(" ", ""),
        local_case_id=(row.get("local_case_id") or "").strip(),
        given_name=(row.get("given_name") or "").strip(),
        family_name=(row.get("family_name") or "").strip(),
    )
    dob = date(row, "date_of_birth")
    if dob:
        rec.date_of_birth.CopyFrom(dob)
    cpp = period(row, "cpp")
    if cpp:
        rec.child_protection_plan.period.CopyFrom(cpp)
    lac = period(row, "lac")
    basis = "".join(c for c in (row.get("lac_legal_basis") or "") if c.isdigit())
    if basis and basis not in LEGAL_BASIS:
        raise Malformed(f"lac_legal_basis: {row.get('lac_legal_basis')!r} is not one of s31, s38, s20")
    if lac or basis:
        rec.looked_after_child.period.CopyFrom(lac or common_pb2.PlanPeriod())
        rec.looked_after_child.legal_basis = LEGAL_BASIS.get(basis, 0)
    ucpp = period(row, "ucpp")
    edd = date(row, "ucpp_expected_delivery_date")
    if ucpp or edd:
        rec.unborn_child_protection_plan.period.CopyFrom(ucpp or common_pb2.PlanPeriod())
        if edd:
            rec.unborn_child_protection_plan.expected_delivery_date.CopyFrom(edd)
    return rec


def describe(err: grpc.RpcError) -> str:
    """`CODE REASON field=F: message`, from the google.rpc.Status in grpc-status-details-bin."""
    reason, fields = "", []
    # grpcio-status reads (and checks) the google.rpc.Status of grpc-status-details-bin.
    status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    text = err.code().name
    if reason:
        text += f" {reason}"
    if fields:
        text += f" field={','.join(fields)}"
    return f"{text}: {err.details()}"


def upload(stub, metadata, path: pathlib.Path, batch_id: str | None) -> int:
    batch_id = batch_id or "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    lines: list[int] = []  # file line of each record sent, by position
    malformed: list[tuple[int, str, str]] = []

    def requests():
        yield council_pb2.UploadBatchRequest(header=council_pb2.BatchHeader(batch_id=batch_id))
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                line = reader.line_num
                try:
                    if None in row or None in row.values():
                        raise Malformed("the row's field count differs from the header")
                    rec = record(row)
                except Malformed as bad:
                    malformed.append((line, (row.get("local_case_id") or ""), str(bad)))
                    continue
                lines.append(line)
                yield council_pb2.UploadBatchRequest(record=rec)

    answer = stub.UploadBatch(requests(), metadata=metadata, timeout=600)
    result = answer.result
    outcome = council_pb2.BatchOutcome.Name(result.outcome).removeprefix("BATCH_OUTCOME_")
    print(f"batch {result.batch_id}: {outcome}{' (replayed)' if answer.replayed else ''}")
    print(f"  accepted {result.accepted_count}  rejected {result.rejected_count}  malformed {len(malformed)}")
    report = [(line, f"  line {line} case {case_id or '-'}: MALFORMED {message}") for line, case_id, message in malformed]
    for rej in result.rejections:
        reason = errors_pb2.ErrorReason.Name(rej.reason).removeprefix("ERROR_REASON_")
        line = lines[rej.position - 1] if 0 < rej.position <= len(lines) else 0
        report.append((line, f"  line {line} case {rej.local_case_id or '-'}: {reason} {rej.field}: {rej.message}"))
    for _, text in sorted(report):
        print(text)
    return 3 if (result.rejected_count or malformed) else 0


def watch(stub, metadata, count: int | None, after: int | None) -> int:
    printed = 0
    request = council_pb2.SubscribeNotificationsRequest()
    if after is not None:
        request.after_sequence = after
    for event in stub.SubscribeNotifications(request, metadata=metadata):
        if not event.HasField("notification"):
            continue  # heartbeat
        n = event.notification
        if n.HasField("access"):
            ev = n.access.access_event
            acc = ev.accessor
            who = acc.person.name if acc.HasField("person") else f"system {acc.system.system_name}"
            setting = common_pb2.CareSetting.Name(acc.care_setting).removeprefix("CARE_SETTING_")
            print(f"#{n.sequence} ACCESS case {n.access.local_case_id or '-'}: {who} at "
                  f"{acc.organisation.name} [{acc.organisation.ods_code}], {setting}", flush=True)
        else:
            inactive = n.inactive_nhs_number
            reason = common_pb2.InactiveReason.Name(inactive.reason).removeprefix("INACTIVE_REASON_")
            print(f"#{n.sequence} INACTIVE_NHS_NUMBER case {inactive.local_case_id or '-'}: {reason}", flush=True)
        # Acknowledge only after the notification was written out: at-least-once.
        stub.AcknowledgeNotifications(council_pb2.AcknowledgeNotificationsRequest(sequence=n.sequence),
                                      metadata=metadata, timeout=10)
        printed += 1
        if count is not None and printed >= count:
            return 0
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=os.environ.get("CPIS_REGISTRY_URL", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("CPIS_COUNCIL_TOKEN"))
    parser.add_argument("--ca-cert", default=os.environ.get("CPIS_CA_CERT"), type=pathlib.Path)
    parser.add_argument("--client-cert", default=os.environ.get("CPIS_CLIENT_CERT"), type=pathlib.Path)
    parser.add_argument("--client-key", default=os.environ.get("CPIS_CLIENT_KEY"), type=pathlib.Path)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="upload a CSV extract as one batch")
    up.add_argument("file", type=pathlib.Path)
    up.add_argument("--batch-id")
    wa = commands.add_parser("watch", help="stream notifications, acknowledging each")
    wa.add_argument("--count", type=int)
    wa.add_argument("--after", type=int)
    opts = parser.parse_args()

    metadata = [("authorization", f"Bearer {opts.token}")] if opts.token else []
    try:
        channel = open_channel(opts)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with channel:
        stub = council_pb2_grpc.CouncilServiceStub(channel)
        try:
            if opts.command == "upload":
                return upload(stub, metadata, opts.file, opts.batch_id)
            return watch(stub, metadata, opts.count, opts.after)
        except grpc.RpcError as err:
            print(f"error: {describe(err)}", file=sys.stderr)
            return 1


def open_channel(opts: argparse.Namespace) -> grpc.Channel:
    """A channel to the registry: plaintext for http:// or a bare HOST:PORT, TLS for https://."""
    if not opts.registry.startswith("https://"):
        return grpc.insecure_channel(opts.registry.removeprefix("http://"))
    if opts.ca_cert is None:
        raise ValueError(f"{opts.registry} is https: give the CA with --ca-cert or CPIS_CA_CERT")
    if (opts.client_cert is None) != (opts.client_key is None):
        raise ValueError("--client-cert and --client-key go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=opts.ca_cert.read_bytes(),
        private_key=opts.client_key.read_bytes() if opts.client_key else None,
        certificate_chain=opts.client_cert.read_bytes() if opts.client_cert else None,
    )
    return grpc.secure_channel(opts.registry.removeprefix("https://"), credentials)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C ends a live watch; everything printed was acknowledged
        sys.exit(0)
