//! The real OpenTelemetry Python SDK (`opentelemetry-sdk` with the OTLP/HTTP
//! protobuf exporter) sends counters, up-down counters, gauges and histograms
//! with resource attributes to Sextant; the series come back through the
//! query API with Prometheus's names. Python: `SEXTANT_PYTHON`, else `.venv`
//! in the checkout (made by `.ci/run`), else `python3`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{enc, get};

fn python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = [
        std::env::var_os("SEXTANT_PYTHON").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")),
        Some(PathBuf::from("python3")),
    ]
    .into_iter()
    .flatten()
    .collect();
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args([
                "-c",
                "import opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http.metric_exporter",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

const SCRIPT: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation

url = sys.argv[1]
exporter = OTLPMetricExporter(endpoint=url + "/v1/metrics")
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
resource = Resource.create({
    "service.name": "vllm", "service.namespace": "inference", "service.instance.id": "replica-0",
    "cloud.availability_zone": "us-east-1b", "k8s.pod.name": "vllm-0",
})
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("sextant-test", "1.0")
tokens = meter.create_counter("llm.tokens.generated", unit="{token}", description="Generated tokens")
tokens.add(120, {"model": "llama"})
tokens.add(30, {"model": "llama"})
tokens.add(7, {"model": "mistral"})
running = meter.create_up_down_counter("llm.requests.running", unit="{request}")
running.add(5, {"model": "llama"})
running.add(-2, {"model": "llama"})
def kv_cache(options):
    yield Observation(0.73, {"gpu": "0"})
meter.create_observable_gauge("gpu.kv_cache.usage", callbacks=[kv_cache], unit="1")
ttft = meter.create_histogram("llm.ttft", unit="s", description="Time to first token")
for v in [0.02, 0.04, 0.3, 1.5]:
    ttft.record(v, {"model": "llama"})
ok = provider.force_flush(10000)
provider.shutdown()
print("exported", ok)
"#;

fn value(base: &str, q: &str) -> Option<f64> {
    let j = get(base, &format!("/api/v1/query?query={}", enc(q))).json();
    j["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok())
}

#[test]
fn opentelemetry_python_sdk_exports_to_sextant() {
    let Some(py) = python() else {
        if std::env::var_os("CI").is_some() {
            panic!("the OpenTelemetry Python SDK is not installed; .ci/run must create .venv with it");
        }
        println!("SKIPPED: no Python with opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http");
        return;
    };
    let s = sextant::TestServer::start().expect("server");
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("export.py");
    std::fs::write(&script, SCRIPT).expect("script");
    let out = Command::new(&py)
        .arg(&script)
        .arg(s.url())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "SDK script failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exported True"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let base = s.url();
    assert_eq!(
        value(
            base,
            "llm_tokens_generated_total{model=\"llama\", job=\"inference/vllm\", instance=\"replica-0\"}"
        ),
        Some(150.0)
    );
    assert_eq!(value(base, "llm_tokens_generated_total{model=\"mistral\"}"), Some(7.0));
    assert_eq!(value(base, "llm_requests_running{model=\"llama\"}"), Some(3.0));
    assert_eq!(value(base, "gpu_kv_cache_usage_ratio{gpu=\"0\"}"), Some(0.73));
    assert_eq!(value(base, "llm_ttft_seconds_count{model=\"llama\"}"), Some(4.0));
    let sum = value(base, "llm_ttft_seconds_sum{model=\"llama\"}").expect("sum");
    assert!((sum - 1.86).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(base, "llm_ttft_seconds_bucket{model=\"llama\", le=\"+Inf\"}"),
        Some(4.0)
    );
    let q = value(
        base,
        "histogram_quantile(0.5, llm_ttft_seconds_bucket{model=\"llama\"})",
    )
    .expect("quantile");
    assert!(q > 0.0 && q <= 5.0, "{q}");
    assert_eq!(
        value(
            base,
            "target_info{job=\"inference/vllm\", k8s_pod_name=\"vllm-0\", cloud_availability_zone=\"us-east-1b\"}"
        ),
        Some(1.0)
    );
    let md = get(base, "/api/v1/metadata?metric=llm_ttft_seconds").json();
    assert_eq!(md["data"]["llm_ttft_seconds"][0]["type"], "histogram");
    assert_eq!(md["data"]["llm_ttft_seconds"][0]["help"], "Time to first token");
}

const GRPC_SCRIPT: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

if len(sys.argv) > 2:
    import grpc
    creds = grpc.ssl_channel_credentials(root_certificates=open(sys.argv[2], "rb").read())
    exporter = OTLPMetricExporter(endpoint=sys.argv[1], insecure=False, credentials=creds)
else:
    exporter = OTLPMetricExporter(endpoint=sys.argv[1], insecure=True)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
provider = MeterProvider(resource=Resource.create({"service.name": "tgi"}), metric_readers=[reader])
meter = provider.get_meter("sextant-test")
meter.create_counter("tgi.request.count").add(11, {"model": "gemma"})
meter.create_histogram("tgi.batch.size", unit="{request}").record(8, {"model": "gemma"})
ok = provider.force_flush(10000)
provider.shutdown()
print("exported", ok)
"#;

#[test]
fn opentelemetry_python_sdk_exports_over_grpc() {
    grpc_export(false);
}

#[test]
fn opentelemetry_python_sdk_exports_over_grpc_with_tls() {
    grpc_export(true);
}

fn grpc_export(tls: bool) {
    let Some(py) = python() else {
        if std::env::var_os("CI").is_some() {
            panic!("the OpenTelemetry Python SDK is not installed; .ci/run must create .venv with it");
        }
        println!("SKIPPED: no Python with the OpenTelemetry SDK");
        return;
    };
    let has_grpc = Command::new(&py)
        .args(["-c", "import opentelemetry.exporter.otlp.proto.grpc.metric_exporter"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_grpc {
        if std::env::var_os("CI").is_some() {
            panic!("opentelemetry-exporter-otlp-proto-grpc is not installed; .ci/run must install it");
        }
        println!("SKIPPED: no opentelemetry-exporter-otlp-proto-grpc");
        return;
    }
    let tls_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tls");
    let s = if tls {
        sextant::TestServer::start_tls(
            Default::default(),
            sextant::tls::TlsFiles {
                cert_file: tls_dir.join("server.pem"),
                key_file: tls_dir.join("server.key"),
            },
        )
    } else {
        sextant::TestServer::start()
    }
    .expect("server");
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("export_grpc.py");
    std::fs::write(&script, GRPC_SCRIPT).expect("script");
    let mut cmd = Command::new(&py);
    cmd.arg(&script);
    if tls {
        cmd.arg(format!("https://{}", s.grpc_addr()))
            .arg(tls_dir.join("ca.pem"));
    } else {
        cmd.arg(format!("http://{}", s.grpc_addr()));
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "SDK script failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exported True"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        value(s.url(), "tgi_request_count_total{job=\"tgi\", model=\"gemma\"}"),
        Some(11.0)
    );
    assert_eq!(value(s.url(), "tgi_batch_size_count{model=\"gemma\"}"), Some(1.0));
}
