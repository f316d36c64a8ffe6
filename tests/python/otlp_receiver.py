"""A minimal standard OTLP/gRPC receiver for tests: implements the collector's TraceService,
MetricsService and LogsService Export calls, appends every request it receives as one JSON
line ({"signal": "traces"|"metrics"|"logs", "request": <the request as OTLP JSON, ids in hex>})
to OUT, and
answers success. Prints "port <N>" on stdout once it listens; stops on SIGTERM/SIGINT, or after
--max-seconds (a bound, so a forgotten receiver never outlives its test run for long).

With --count-only (the benchmark's receiver: cheap, so it takes little of the CPU it measures),
each line holds only the counts: {"signal": ..., "spans": N} or {"signal": ..., "points": N}.

Usage: otlp_receiver.py OUT [--port N] [--max-seconds S] [--count-only]
"""

import argparse
import base64
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def hex_ids(value):
    """OTLP JSON writes trace and span ids in hex (MessageToDict gives base64 for bytes)."""
    if isinstance(value, dict):
        return {
            k: base64.b64decode(v).hex() if k in ID_FIELDS and isinstance(v, str) else hex_ids(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [hex_ids(v) for v in value]
    return value


def counts(signal_name, request):
    """How many spans (traces) or data points (metrics) or records (logs) a request carries."""
    if signal_name == "traces":
        n = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return {"signal": signal_name, "spans": n}
    if signal_name == "metrics":
        n = sum(len(s.metrics) for r in request.resource_metrics for s in r.scope_metrics)
        return {"signal": signal_name, "metrics": n}
    n = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
    return {"signal": signal_name, "records": n}


class Sink:
    """Appends one JSON line per request, whole lines only (one lock, one write, flushed)."""

    def __init__(self, path, count_only=False):
        self.lock = threading.Lock()
        self.out = open(path, "a", encoding="utf-8")
        self.count_only = count_only

    def write(self, signal_name, request):
        if self.count_only:
            line = json.dumps(counts(signal_name, request))
        else:
            line = json.dumps({"signal": signal_name, "request": hex_ids(MessageToDict(request))})
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        self.sink.write("traces", request)
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        self.sink.write("metrics", request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        self.sink.write("logs", request)
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--count-only", action="store_true")
    args = parser.parse_args()

    sink = Sink(args.out, args.count_only)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(sink), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(sink), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(sink), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    server.start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"port {port}", flush=True)
    stop.wait(args.max_seconds)
    # Let calls in flight finish (their lines are written), briefly.
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
