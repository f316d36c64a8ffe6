"""Proves a council or EPR vendor can generate a working Python client from proto/.

Generates Python stubs for every CP-IS contract with grpcio-tools into a temporary directory,
then, against a running server: checks gRPC health is SERVING, lists services through
reflection (v1alpha, what grpcio-reflection speaks) and expects each --service, and makes one
real call to --call (Service/Method) with an empty request, expecting the gRPC status --expect.

With --ca-cert (and --client-cert/--client-key for mutual TLS) the channel is TLS,
grpc.ssl_channel_credentials, and ADDR's host must be one the server certificate names.

Usage: client_check.py ADDR --service NAME [--service NAME ...] --call Svc/Method --expect CODE
       [--ca-cert PEM [--client-cert PEM --client-key PEM]]
Exit 0 on success; prints what it checked.
"""

import argparse
import importlib
import pathlib
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"


def generate(out: pathlib.Path) -> None:
    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "cpis").rglob("*.proto"))
    files += ["google/type/date.proto", "google/rpc/error_details.proto", "google/rpc/status.proto"]
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed for {files}")
    print(f"generated python stubs for {len(files)} files")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("addr")
    parser.add_argument("--service", action="append", required=True)
    parser.add_argument("--call", required=True, help="package.Service/Method")
    parser.add_argument("--expect", required=True, help="expected gRPC status code name")
    parser.add_argument("--ca-cert", help="PEM CA of the server certificate: connect with TLS")
    parser.add_argument("--client-cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--client-key", help="PEM key of --client-cert")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        generate(out)
        sys.path.insert(0, str(out))

        if opts.ca_cert:
            read = lambda path: pathlib.Path(path).read_bytes() if path else None  # noqa: E731
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(opts.ca_cert),
                private_key=read(opts.client_key),
                certificate_chain=read(opts.client_cert),
            )
            channel = grpc.secure_channel(opts.addr, credentials)
            print("channel: TLS")
        else:
            channel = grpc.insecure_channel(opts.addr)
        grpc.channel_ready_future(channel).result(timeout=10)

        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        if status.status != health_pb2.HealthCheckResponse.SERVING:
            sys.exit(f"health is {status.status}, expected SERVING")
        print("health: SERVING")

        listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        missing = [s for s in opts.service if s not in listed]
        if missing:
            sys.exit(f"reflection lists {sorted(listed)}; missing {missing}")
        print(f"reflection (v1alpha) lists: {', '.join(sorted(listed))}")

        # One real call through the generated stub: cpis.registry.v1.CouncilService/GetContactDetails
        # -> module cpis.registry.v1.council_pb2_grpc, class CouncilServiceStub.
        full_service, method = opts.call.split("/")
        package, service = full_service.rsplit(".", 1)
        pb2_grpc = None
        for path in (out / package.replace(".", "/")).glob("*_pb2_grpc.py"):
            module = importlib.import_module(f"{package}.{path.stem}")
            if hasattr(module, f"{service}Stub"):
                pb2_grpc = module
                break
        if pb2_grpc is None:
            sys.exit(f"no generated stub for {full_service}")
        pb2 = importlib.import_module(pb2_grpc.__name__.removesuffix("_grpc"))
        stub = getattr(pb2_grpc, f"{service}Stub")(channel)
        request_type = getattr(pb2, f"{method}Request")
        try:
            getattr(stub, method)(request_type(), timeout=5)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:  # the expected path for error codes
            code = err.code()
        if code.name != opts.expect:
            sys.exit(f"{opts.call} answered {code.name}, expected {opts.expect}")
        print(f"{opts.call}: {code.name} as expected")
    print("python client check passed")


if __name__ == "__main__":
    main()
