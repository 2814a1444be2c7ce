//! A deterministic synthetic LLM inference fleet: vLLM-style histograms,
//! counters and gauges per replica, and DCGM-style gauges per GPU, with values
//! that behave like real ones (monotonic counters, consistent cumulative
//! histogram buckets, load following a daily curve). Shared by the benchmarks,
//! the demo and the peer-comparison harness.
//!
//! Everything is a pure function of the spec, the series and the timestamp, so
//! any sample can be regenerated without state.

pub mod demo;
pub mod incident;
pub mod remote_write;
pub mod send;

pub use incident::{Incident, IncidentKind};
use sextant_model::{Labels, Sample};

/// Size and shape of the fleet.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub endpoints: usize,
    /// Inference components (models sharing GPU instances) per endpoint.
    pub components: usize,
    pub replicas: usize,
    pub gpus_per_replica: usize,
    pub seed: u64,
    /// Serve some models with SGLang-style metrics instead of vLLM's.
    pub sglang: bool,
    /// Replicas restart now and then, resetting their counters.
    pub restarts: bool,
    /// Export `up` per scraped target, as a scraping agent would.
    pub up: bool,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            endpoints: 4,
            components: 3,
            replicas: 2,
            gpus_per_replica: 2,
            seed: 42,
            sglang: false,
            restarts: false,
            up: false,
        }
    }
}

impl FleetSpec {
    /// The demo's fleet: every realism switch on, about `n` series.
    pub fn demo(n: usize) -> FleetSpec {
        let switches = FleetSpec {
            sglang: true,
            restarts: true,
            up: true,
            ..FleetSpec::default()
        };
        // One replica of each of the six models gives the mean replica size.
        let probe = Fleet::new(&FleetSpec {
            endpoints: 2,
            components: 3,
            replicas: 1,
            ..switches.clone()
        });
        let per_replica = (probe.series.len() as f64 / 6.0).max(1.0);
        let replicas_needed = ((n as f64 / per_replica).round() as usize).max(1);
        let components = 3;
        let endpoints = replicas_needed.div_ceil(components * 3).max(1);
        let replicas = ((replicas_needed as f64 / (endpoints * components) as f64).round() as usize).clamp(1, 3);
        FleetSpec {
            endpoints,
            components,
            replicas,
            ..switches
        }
    }

    /// Number of replicas.
    pub fn replica_count(&self) -> usize {
        self.endpoints * self.components * self.replicas
    }

    /// A spec with about `n` active series.
    pub fn with_series(n: usize) -> FleetSpec {
        let per_replica = Fleet::new(&FleetSpec {
            endpoints: 1,
            components: 1,
            replicas: 1,
            ..FleetSpec::default()
        })
        .series
        .len();
        let replicas_needed = n.div_ceil(per_replica).max(1);
        let components = 3;
        let replicas = 3;
        let endpoints = replicas_needed.div_ceil(components * replicas).max(1);
        FleetSpec {
            endpoints,
            components,
            replicas,
            ..FleetSpec::default()
        }
    }
}

/// How a series' values evolve.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Monotonic counter growing by about `rate` per second at full load.
    Counter { rate: f64 },
    /// Cumulative histogram bucket `k` of histogram `hist` (an index into
    /// [`Fleet::bins`]): observations at `rate`/s. The count is the sum of the
    /// bins' own counts up to `k`, so every bucket's increase is at least the
    /// one below's, as in a real histogram. The `_count` is the last bucket.
    Bucket { rate: f64, hist: u32, k: u16 },
    /// Histogram `_sum`: observations at `rate`/s with mean `mean`
    /// (`mean_slow` while a latency regression is on).
    Sum { rate: f64, mean: f64, mean_slow: f64 },
    /// Gauge oscillating around `base` by `amp`, integer-valued when `int`.
    Gauge { base: f64, amp: f64, int: bool },
    /// `up` of a scraped target: 1, or 0 while it is down.
    Up,
}

/// What a series measures, as far as incidents care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Other,
    Ttft,
    KvCache,
    Waiting,
    Running,
    Preemptions,
    Xid,
    GpuUtil,
    Power,
}

/// Where a series comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub endpoint: u32,
    /// Global inference-component index: `endpoint * components + component`.
    pub component: u32,
    /// Global replica index: `component * replicas + replica`.
    pub replica: u32,
    pub zone: u8,
    /// GPU index on the replica's node, for DCGM series.
    pub gpu: Option<u8>,
}

/// One series of the fleet.
#[derive(Debug, Clone)]
pub struct SeriesSpec {
    pub labels: Labels,
    pub kind: Kind,
    /// Per-series noise key.
    pub key: u64,
    pub role: Role,
    pub place: Place,
}

/// The fleet: its series, in a fixed order.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub spec: FleetSpec,
    pub series: Vec<SeriesSpec>,
    /// Per replica: its instance, inference component, model and zone.
    pub replicas: Vec<ReplicaInfo>,
    /// Per histogram: each bin's share of observations, normally and while a
    /// latency regression is on.
    pub bins: Vec<Vec<(f64, f64)>>,
}

/// Identity of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaInfo {
    pub endpoint: String,
    pub component: String,
    pub model: String,
    pub zone: String,
    pub instance: String,
    pub hostname: String,
    /// `vllm` or `sglang`.
    pub engine: &'static str,
}

/// Bucket bounds of vLLM's time-to-first-token histogram (22 buckets with +Inf).
pub const TTFT_BUCKETS: [f64; 21] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0,
];
/// Inter-token latency buckets (19 with +Inf).
pub const ITL_BUCKETS: [f64; 18] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 80.0,
];
/// End-to-end, queue, prefill and decode time buckets (21 with +Inf).
pub const E2E_BUCKETS: [f64; 20] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0,
];
/// Token-count buckets.
pub const TOKEN_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// SGLang's time-to-first-token buckets.
pub const SGLANG_TTFT_BUCKETS: [f64; 17] = [
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 120.0, 160.0,
];
/// SGLang's inter-token latency buckets.
pub const SGLANG_ITL_BUCKETS: [f64; 23] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0,
    2.0, 4.0, 6.0, 8.0,
];
/// SGLang's end-to-end latency buckets.
pub const SGLANG_E2E_BUCKETS: [f64; 19] = [
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 400.0, 800.0,
];

/// The three availability zones.
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const MODELS: [&str; 6] = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "Qwen/Qwen2.5-14B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "google/gemma-2-9b-it",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
];
/// Models served by SGLang when the spec asks for some SGLang replicas.
const SGLANG_MODELS: [usize; 2] = [2, 5];

/// The XID a GPU reports when it falls off the bus.
pub const XID_FALLEN_OFF: f64 = 79.0;
/// How long after its XID error a failing GPU stops reporting.
pub const XID_FALL_OFF_MS: i64 = 60_000;

/// SplitMix64: a tiny, good, deterministic mixer.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// Log-normal CDF, approximated with the logistic function (good to ~1%).
fn lognormal_cdf(x: f64, median: f64, sigma: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let z = (x / median).ln() / sigma;
    1.0 / (1.0 + (-1.702 * z).exp())
}

/// Load factor in (0.2, 1.0], following a daily curve (peak mid-afternoon UTC).
pub fn load(t_ms: i64, phase: f64) -> f64 {
    let day = 86_400_000.0;
    let x = (t_ms as f64 / day + phase) * std::f64::consts::TAU;
    0.6 + 0.4 * (x - 1.9).sin()
}

/// Integral of `load` from 0 to `t` (ms), in load-seconds: keeps counters
/// consistent with the instantaneous rate.
fn load_integral(t_ms: i64, phase: f64) -> f64 {
    let day = 86_400_000.0;
    let w = std::f64::consts::TAU / day;
    let a = phase * std::f64::consts::TAU - 1.9;
    let t = t_ms as f64;
    let integral_ms = 0.6 * t - 0.4 / w * ((w * t + a).cos() - a.cos());
    integral_ms / 1000.0
}

/// Latency of a model after a bad deploy, relative to before.
const REGRESSION_FACTOR: f64 = 5.0;

fn role_of(name: &str) -> Role {
    let base = name
        .strip_suffix("_bucket")
        .or_else(|| name.strip_suffix("_sum"))
        .or_else(|| name.strip_suffix("_count"))
        .unwrap_or(name);
    match base {
        "vllm:time_to_first_token_seconds" | "sglang:time_to_first_token_seconds" => Role::Ttft,
        "vllm:kv_cache_usage_perc" | "sglang:token_usage" => Role::KvCache,
        "vllm:num_requests_waiting" | "sglang:num_queue_reqs" => Role::Waiting,
        "vllm:num_requests_running" | "sglang:num_running_reqs" => Role::Running,
        "vllm:num_preemptions_total" => Role::Preemptions,
        "DCGM_FI_DEV_XID_ERRORS" => Role::Xid,
        "DCGM_FI_DEV_GPU_UTIL" => Role::GpuUtil,
        "DCGM_FI_DEV_POWER_USAGE" => Role::Power,
        _ => Role::Other,
    }
}

/// Builds one replica's series.
struct ReplicaBuilder<'a> {
    base: Vec<(String, String)>,
    place: Place,
    out: &'a mut Vec<SeriesSpec>,
    key: &'a mut u64,
    bins: &'a mut Vec<Vec<(f64, f64)>>,
}

impl ReplicaBuilder<'_> {
    fn push(&mut self, labels: Labels, kind: Kind) {
        *self.key = mix(*self.key);
        let role = role_of(labels.metric_name());
        self.out.push(SeriesSpec {
            labels,
            kind,
            key: *self.key,
            role,
            place: self.place,
        });
    }

    fn labels(&self, name: &str, extra: &[(&str, String)]) -> Labels {
        let mut v = self.base.clone();
        v.push(("__name__".into(), name.into()));
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Labels::from_pairs(v)
    }

    fn counter(&mut self, name: &str, extra: &[(&str, String)], rate: f64) {
        let l = self.labels(name, extra);
        self.push(l, Kind::Counter { rate });
    }

    fn gauge(&mut self, name: &str, base: f64, amp: f64, int: bool) {
        let l = self.labels(name, &[]);
        self.push(l, Kind::Gauge { base, amp, int });
    }

    fn hist(&mut self, name: &str, bounds: &[f64], median: f64, sigma: f64, rate: f64) {
        let slow = if role_of(name) == Role::Ttft {
            REGRESSION_FACTOR
        } else {
            1.0
        };
        let hist = self.bins.len() as u32;
        let mut shares = Vec::with_capacity(bounds.len() + 1);
        let (mut prev, mut prev_slow) = (0.0, 0.0);
        for (k, b) in bounds.iter().enumerate() {
            let (c, cs) = (
                lognormal_cdf(*b, median, sigma),
                lognormal_cdf(*b, median * slow, sigma),
            );
            shares.push((c - prev, cs - prev_slow));
            (prev, prev_slow) = (c, cs);
            let l = self.labels(&format!("{name}_bucket"), &[("le", fmt_le(*b))]);
            self.push(
                l,
                Kind::Bucket {
                    rate,
                    hist,
                    k: k as u16,
                },
            );
        }
        shares.push((1.0 - prev, 1.0 - prev_slow));
        let all = Kind::Bucket {
            rate,
            hist,
            k: bounds.len() as u16,
        };
        self.bins.push(shares);
        let l = self.labels(&format!("{name}_bucket"), &[("le", "+Inf".into())]);
        self.push(l, all);
        let l = self.labels(&format!("{name}_count"), &[]);
        self.push(l, all);
        let mean = median * (sigma * sigma / 2.0).exp();
        let l = self.labels(&format!("{name}_sum"), &[]);
        self.push(
            l,
            Kind::Sum {
                rate,
                mean,
                mean_slow: mean * slow,
            },
        );
    }
}

impl Fleet {
    pub fn new(spec: &FleetSpec) -> Fleet {
        let mut series = Vec::new();
        let mut replicas = Vec::new();
        let mut bins = Vec::new();
        let mut key = spec.seed;
        for e in 0..spec.endpoints {
            for c in 0..spec.components {
                let model_ix = (e * spec.components + c) % MODELS.len();
                let model = MODELS[model_ix];
                let sglang = spec.sglang && SGLANG_MODELS.contains(&model_ix);
                let traffic = 0.5 + unit(spec.seed ^ ((e * 131 + c) as u64)) * 1.5;
                let ttft_median = 0.05 + unit(spec.seed ^ ((e * 7 + c * 13) as u64)) * 0.3;
                for r in 0..spec.replicas {
                    let zone = (e + c + r) % ZONES.len();
                    let component = (e * spec.components + c) as u32;
                    let replica = component * spec.replicas as u32 + r as u32;
                    let instance = format!("10.{}.{}.{}:8000", e, c, r);
                    let hostname = format!("node-{e:02}-{c}-{r}");
                    let engine = if sglang { "sglang" } else { "vllm" };
                    replicas.push(ReplicaInfo {
                        endpoint: format!("endpoint-{e:02}"),
                        component: format!("ic-{e:02}-{c}"),
                        model: model.to_string(),
                        zone: ZONES[zone].to_string(),
                        instance: instance.clone(),
                        hostname: hostname.clone(),
                        engine,
                    });
                    let mut base = vec![
                        ("endpoint".to_string(), format!("endpoint-{e:02}")),
                        ("inference_component".to_string(), format!("ic-{e:02}-{c}")),
                        ("model_name".to_string(), model.to_string()),
                        ("availability_zone".to_string(), ZONES[zone].to_string()),
                        ("instance".to_string(), instance),
                    ];
                    if spec.up {
                        base.push(("job".to_string(), engine.to_string()));
                    }
                    let place = Place {
                        endpoint: e as u32,
                        component,
                        replica,
                        zone: zone as u8,
                        gpu: None,
                    };
                    let mut b = ReplicaBuilder {
                        base: base.clone(),
                        place,
                        out: &mut series,
                        key: &mut key,
                        bins: &mut bins,
                    };
                    let rps = 2.0 * traffic;
                    if spec.up {
                        let l = b.labels("up", &[]);
                        b.push(l, Kind::Up);
                    }
                    if sglang {
                        b.base.push(("tp_rank".into(), "0".into()));
                        b.hist(
                            "sglang:time_to_first_token_seconds",
                            &SGLANG_TTFT_BUCKETS,
                            ttft_median,
                            0.8,
                            rps,
                        );
                        b.hist(
                            "sglang:inter_token_latency_seconds",
                            &SGLANG_ITL_BUCKETS,
                            0.025,
                            0.5,
                            rps * 200.0,
                        );
                        b.hist("sglang:e2e_request_latency_seconds", &SGLANG_E2E_BUCKETS, 6.0, 0.7, rps);
                        b.counter("sglang:prompt_tokens_total", &[], rps * 300.0);
                        b.counter("sglang:generation_tokens_total", &[], rps * 200.0);
                        b.counter("sglang:num_requests_total", &[], rps);
                        b.gauge("sglang:num_running_reqs", 8.0 * traffic, 4.0, true);
                        b.gauge("sglang:num_queue_reqs", 1.0, 1.0, true);
                        b.gauge("sglang:token_usage", 0.5, 0.3, false);
                        b.gauge("sglang:cache_hit_rate", 0.4, 0.1, false);
                        b.gauge("sglang:gen_throughput", 400.0 * traffic, 150.0, false);
                    } else {
                        b.base.push(("engine".into(), "0".into()));
                        b.hist("vllm:time_to_first_token_seconds", &TTFT_BUCKETS, ttft_median, 0.8, rps);
                        b.hist("vllm:inter_token_latency_seconds", &ITL_BUCKETS, 0.03, 0.5, rps * 200.0);
                        b.hist("vllm:e2e_request_latency_seconds", &E2E_BUCKETS, 6.0, 0.7, rps);
                        b.hist("vllm:request_queue_time_seconds", &E2E_BUCKETS, 0.2, 1.2, rps);
                        b.hist("vllm:request_prefill_time_seconds", &E2E_BUCKETS, 0.15, 0.6, rps);
                        b.hist("vllm:request_decode_time_seconds", &E2E_BUCKETS, 5.5, 0.7, rps);
                        b.hist("vllm:request_prompt_tokens", &TOKEN_BUCKETS, 300.0, 1.0, rps);
                        b.hist("vllm:request_generation_tokens", &TOKEN_BUCKETS, 200.0, 0.9, rps);
                        b.hist("vllm:iteration_tokens_total", &TOKEN_BUCKETS, 40.0, 1.1, rps * 20.0);
                        b.counter("vllm:prompt_tokens_total", &[], rps * 300.0);
                        b.counter("vllm:generation_tokens_total", &[], rps * 200.0);
                        for (reason, share) in [("stop", 0.9), ("length", 0.09), ("abort", 0.01)] {
                            b.counter(
                                "vllm:request_success_total",
                                &[("finished_reason", reason.into())],
                                rps * share,
                            );
                        }
                        b.counter("vllm:num_preemptions_total", &[], rps * 0.01);
                        b.counter("vllm:prefix_cache_queries_total", &[], rps * 300.0);
                        b.counter("vllm:prefix_cache_hits_total", &[], rps * 120.0);
                        b.gauge("vllm:num_requests_running", 8.0 * traffic, 4.0, true);
                        b.gauge("vllm:num_requests_waiting", 1.0, 1.0, true);
                        b.gauge("vllm:kv_cache_usage_perc", 0.5, 0.3, false);
                    }
                    for g in 0..spec.gpus_per_replica {
                        let mut gb = ReplicaBuilder {
                            base: base.clone(),
                            place: Place {
                                gpu: Some(g as u8),
                                ..place
                            },
                            out: &mut *b.out,
                            key: &mut *b.key,
                            bins: &mut *b.bins,
                        };
                        gb.base.push(("gpu".into(), g.to_string()));
                        gb.base.push((
                            "UUID".into(),
                            format!("GPU-{:08x}-{e:02}{c}{r}{g}", mix(spec.seed ^ g as u64) as u32),
                        ));
                        gb.base.push(("modelName".into(), "NVIDIA H100 80GB HBM3".into()));
                        gb.base.push(("Hostname".into(), hostname.clone()));
                        gb.gauge("DCGM_FI_DEV_GPU_UTIL", 70.0, 25.0, true);
                        gb.gauge("DCGM_FI_DEV_MEM_COPY_UTIL", 40.0, 20.0, true);
                        gb.gauge("DCGM_FI_DEV_FB_USED", 60_000.0, 10_000.0, true);
                        gb.gauge("DCGM_FI_DEV_FB_FREE", 20_000.0, 10_000.0, true);
                        gb.gauge("DCGM_FI_DEV_POWER_USAGE", 450.0, 150.0, false);
                        gb.gauge("DCGM_FI_DEV_GPU_TEMP", 62.0, 8.0, true);
                        gb.gauge("DCGM_FI_DEV_SM_CLOCK", 1755.0, 200.0, true);
                        gb.gauge("DCGM_FI_DEV_XID_ERRORS", 0.0, 0.0, true);
                        gb.gauge("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.7, 0.25, false);
                        gb.gauge("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0.45, 0.2, false);
                        gb.counter("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &[], 450_000.0);
                    }
                }
            }
        }
        Fleet {
            spec: spec.clone(),
            series,
            replicas,
            bins,
        }
    }

    fn phase(&self, s: &SeriesSpec) -> f64 {
        // Every series of a replica shares its load phase, so histogram
        // buckets stay cumulative at every instant.
        let rk = mix(self.spec.seed ^ 0x5eed ^ u64::from(s.place.replica));
        (rk % 1000) as f64 / 20_000.0
    }

    /// The value of series `i` at time `t` (ms), with no incident.
    pub fn value(&self, i: usize, t_ms: i64) -> f64 {
        self.value_at(i, t_ms, &[]).unwrap_or(f64::NAN)
    }

    /// The value of series `i` at `t` (ms) under `incidents`, or `None` when the
    /// series is not reported at that time.
    pub fn value_at(&self, i: usize, t_ms: i64, incidents: &[Incident]) -> Option<f64> {
        let s = &self.series[i];
        let active = |k: IncidentKind| {
            incidents
                .iter()
                .filter(move |x| x.kind == k && x.active(t_ms) && x.affects(&self.spec, &s.place))
        };
        if active(IncidentKind::ReplicaDown).next().is_some() {
            return match s.kind {
                Kind::Up => Some(0.0),
                _ => None,
            };
        }
        let xid = s.place.gpu == Some(0) && active(IncidentKind::GpuXid).next().is_some();
        if xid && active(IncidentKind::GpuXid).any(|x| t_ms >= x.start_ms + XID_FALL_OFF_MS) {
            return None;
        }
        let phase = self.phase(s);
        let v = match s.kind {
            Kind::Up => 1.0,
            Kind::Counter { rate } => {
                let (normal, special) = self.accumulated(s, t_ms, phase, incidents);
                // The special segments of a preemption counter are KV-cache saturation.
                (rate * (normal + 40.0 * special)).floor().max(0.0)
            }
            Kind::Sum { rate, mean, mean_slow } => {
                let (normal, slow) = self.accumulated(s, t_ms, phase, incidents);
                // Sums are floats: rounded to microseconds as exporters often do.
                ((rate * (mean * normal + mean_slow * slow)) * 1e6).round() / 1e6
            }
            Kind::Bucket { rate, hist, k } => {
                let (normal, slow) = self.accumulated(s, t_ms, phase, incidents);
                self.bins[hist as usize][..=k as usize]
                    .iter()
                    .map(|(p, q)| (rate * (p * normal + q * slow)).floor().max(0.0))
                    .sum()
            }
            Kind::Gauge { base, amp, int } => {
                let noise = unit(s.key ^ (t_ms as u64 / 1000)) * 2.0 - 1.0;
                let mut v = base + amp * (0.6 * (load(t_ms, phase) * 2.0 - 1.2) + 0.4 * noise);
                let mult = self.traffic_mult(s, t_ms, incidents);
                let kv = active(IncidentKind::KvCacheSaturation).next();
                match s.role {
                    Role::Running => v *= mult,
                    Role::GpuUtil if mult > 1.0 => v = 97.0 + 3.0 * unit(s.key ^ t_ms as u64),
                    Role::GpuUtil => v *= mult.max(0.5),
                    Role::Power if mult > 1.0 => v = 680.0 + 20.0 * noise,
                    Role::Xid if xid => v = XID_FALLEN_OFF,
                    _ => {}
                }
                if let Some(k) = kv {
                    let secs = (t_ms - k.start_ms).max(0) as f64 / 1000.0;
                    match s.role {
                        Role::KvCache => v = 0.97 + 0.03 * unit(s.key ^ t_ms as u64),
                        Role::Waiting => v = (4.0 + secs * 0.2).min(250.0),
                        Role::Running => v = base + amp,
                        _ => {}
                    }
                }
                v = v.max(0.0);
                if s.role == Role::KvCache {
                    v = v.min(1.0);
                }
                if int {
                    v.round()
                } else {
                    (v * 1e4).round() / 1e4
                }
            }
        };
        Some(v)
    }

    /// Traffic multiplier of the series' replica at `t` (zone skew).
    fn traffic_mult(&self, s: &SeriesSpec, t_ms: i64, incidents: &[Incident]) -> f64 {
        let mut m = 1.0;
        for x in incidents {
            if x.kind == IncidentKind::ZoneSkew && x.active(t_ms) {
                m *= if x.affects(&self.spec, &s.place) { 2.2 } else { 0.4 };
            }
        }
        m
    }

    /// Start of the replica's current process: its last restart, or the end of
    /// its last outage.
    fn process_start(&self, s: &SeriesSpec, t_ms: i64, incidents: &[Incident]) -> i64 {
        let mut start = i64::MIN;
        if self.spec.restarts {
            let rk = mix(self.spec.seed ^ 0x7e57 ^ u64::from(s.place.replica));
            // About one restart every three to five days per replica.
            let period = 3 * 86_400_000 + (rk % (2 * 86_400_000)) as i64;
            let offset = (mix(rk) % period as u64) as i64;
            start = t_ms - (t_ms - offset).rem_euclid(period);
        }
        for x in incidents {
            if x.kind == IncidentKind::ReplicaDown && x.affects(&self.spec, &s.place) {
                if let Some(end) = x.end_ms {
                    if end <= t_ms {
                        start = start.max(end);
                    }
                }
            }
        }
        start
    }

    /// Load accumulated since the process started, split into normal time
    /// and the time under the incident that changes this series' rate (a
    /// TTFT regression for TTFT series, KV saturation for preemptions): the
    /// integral of load × the traffic multiplier, piecewise over incident
    /// boundaries.
    fn accumulated(&self, s: &SeriesSpec, t_ms: i64, phase: f64, incidents: &[Incident]) -> (f64, f64) {
        let from = self.process_start(s, t_ms, incidents);
        let mut cuts: Vec<i64> = vec![from.max(0), t_ms.max(0)];
        for x in incidents {
            for b in [Some(x.start_ms), x.end_ms].into_iter().flatten() {
                if b > from && b < t_ms {
                    cuts.push(b);
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let special_kind = match s.role {
            Role::Ttft => Some(IncidentKind::TtftRegression),
            Role::Preemptions => Some(IncidentKind::KvCacheSaturation),
            _ => None,
        };
        let (mut normal, mut special) = (0.0, 0.0);
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let mid = a + (b - a) / 2;
            let is_special = special_kind.is_some_and(|k| {
                incidents
                    .iter()
                    .any(|x| x.kind == k && x.active(mid) && x.affects(&self.spec, &s.place))
            });
            let m = self.traffic_mult(s, mid, incidents);
            let d = m * (load_integral(b, phase) - load_integral(a, phase));
            if is_special {
                special += d;
            } else {
                normal += d;
            }
        }
        (normal, special)
    }

    /// Samples of every series at `t` (ms), as `(series index, sample)`.
    pub fn scrape(&self, t_ms: i64) -> impl Iterator<Item = (usize, Sample)> + '_ {
        (0..self.series.len()).map(move |i| (i, Sample::new(t_ms, self.value(i, t_ms))))
    }

    /// What an incident hits, in words an operator would search for.
    pub fn describe(&self, x: &Incident) -> String {
        let n = self.replicas.len().max(1);
        let rep = &self.replicas[x.target % n];
        match x.kind {
            IncidentKind::KvCacheSaturation => format!(
                "KV cache saturated and queue growing on replica {} ({}, {})",
                rep.instance, rep.component, rep.model
            ),
            IncidentKind::ReplicaDown => format!("replica {} ({}) stopped reporting", rep.instance, rep.component),
            IncidentKind::GpuXid => format!(
                "GPU 0 of {} ({}) reports XID {} and then falls off the bus",
                rep.hostname, rep.instance, XID_FALLEN_OFF
            ),
            IncidentKind::TtftRegression => {
                let comps = (self.spec.endpoints * self.spec.components).max(1);
                let comp = x.target % comps;
                let r = &self.replicas[comp * self.spec.replicas];
                format!(
                    "TTFT {}x slower on {} ({}) after a deploy",
                    REGRESSION_FACTOR, r.component, r.model
                )
            }
            IncidentKind::ZoneSkew => format!("traffic skewed toward {}", ZONES[x.target % ZONES.len()]),
        }
    }
}

fn fmt_le(b: f64) -> String {
    let s = format!("{b}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_is_deterministic_and_consistent() {
        let f = Fleet::new(&FleetSpec::default());
        let g = Fleet::new(&FleetSpec::default());
        assert_eq!(f.series.len(), g.series.len());
        assert!(f.series.len() > 1000, "{}", f.series.len());
        let buckets = f
            .series
            .iter()
            .filter(|s| s.labels.metric_name().ends_with("_bucket"))
            .count();
        assert!(
            buckets * 10 > f.series.len() * 7,
            "mostly histogram buckets: {buckets} of {}",
            f.series.len()
        );
        let t = 1_700_000_000_000;
        for i in 0..f.series.len() {
            assert_eq!(f.value(i, t).to_bits(), g.value(i, t).to_bits());
            if matches!(f.series[i].kind, Kind::Counter { .. } | Kind::Bucket { .. }) {
                assert!(f.value(i, t + 15_000) >= f.value(i, t), "counters never decrease");
            }
        }
        // Buckets are cumulative: each le at most the next.
        let ttft: Vec<usize> = (0..f.series.len())
            .filter(|i| {
                f.series[*i].labels.metric_name() == "vllm:time_to_first_token_seconds_bucket"
                    && f.series[*i].labels.get("instance") == "10.0.0.0:8000"
            })
            .collect();
        assert_eq!(ttft.len(), 22);
        for w in ttft.windows(2) {
            assert!(f.value(w[0], t) <= f.value(w[1], t));
            // Increases are cumulative too, so rates never need repairing.
            for dt in [15_000, 60_000, 300_000] {
                let inc = |i: usize| f.value(i, t + dt) - f.value(i, t);
                assert!(inc(w[0]) <= inc(w[1]), "bucket increases over {dt} ms");
            }
        }
    }

    #[test]
    fn sizing_hits_the_requested_order_of_magnitude() {
        let n = Fleet::new(&FleetSpec::with_series(100_000)).series.len();
        assert!((100_000..140_000).contains(&n), "{n}");
        for (want, within) in [(5_000, 0.2), (100_000, 0.05), (1_000_000, 0.02)] {
            let n = Fleet::new(&FleetSpec::demo(want)).series.len() as f64;
            assert!((n / want as f64 - 1.0).abs() < within, "asked {want}, got {n}");
        }
    }

    fn replica_series<'a>(f: &'a Fleet, replica: u32, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        (0..f.series.len())
            .filter(move |i| f.series[*i].place.replica == replica && f.series[*i].labels.metric_name() == name)
    }

    #[test]
    fn demo_fleet_has_sglang_up_and_resets() {
        let f = Fleet::new(&FleetSpec::demo(20_000));
        let names: std::collections::HashSet<&str> = f.series.iter().map(|s| s.labels.metric_name()).collect();
        for n in [
            "up",
            "sglang:time_to_first_token_seconds_bucket",
            "vllm:kv_cache_usage_perc",
            "DCGM_FI_DEV_GPU_UTIL",
        ] {
            assert!(names.contains(n), "{n}");
        }
        // Counters reset rarely: over ten days every replica restarts at least once.
        let i = replica_series(&f, 0, "vllm:prompt_tokens_total")
            .next()
            .expect("series");
        let t0 = 1_700_000_000_000i64;
        let mut resets = 0;
        let mut prev = f.value(i, t0);
        for k in 1..(10 * 24 * 60) {
            let v = f.value(i, t0 + k * 60_000);
            if v < prev {
                resets += 1;
            }
            prev = v;
        }
        assert!((1..=5).contains(&resets), "{resets} resets in ten days");
    }

    #[test]
    fn incidents_change_what_an_operator_would_see() {
        let f = Fleet::new(&FleetSpec::demo(20_000));
        let now = 1_700_000_000_000i64;
        let kv = Incident {
            kind: IncidentKind::KvCacheSaturation,
            start_ms: now,
            end_ms: None,
            target: 3,
        };
        let i = replica_series(&f, 3, "vllm:kv_cache_usage_perc").next().expect("kv");
        assert!(f.value_at(i, now + 60_000, std::slice::from_ref(&kv)).expect("kv") >= 0.97);
        assert!(f.value_at(i, now - 60_000, std::slice::from_ref(&kv)).expect("kv") < 0.97);
        let w = replica_series(&f, 3, "vllm:num_requests_waiting")
            .next()
            .expect("waiting");
        let a = f.value_at(w, now + 60_000, std::slice::from_ref(&kv)).expect("w");
        let b = f.value_at(w, now + 600_000, std::slice::from_ref(&kv)).expect("w");
        assert!(b > a && a >= 4.0, "queue grows: {a} then {b}");

        let down = Incident {
            kind: IncidentKind::ReplicaDown,
            start_ms: now,
            end_ms: Some(now + 600_000),
            target: 1,
        };
        let up = replica_series(&f, 1, "up").next().expect("up");
        assert_eq!(f.value_at(up, now + 1, std::slice::from_ref(&down)), Some(0.0));
        let c = replica_series(&f, 1, "vllm:prompt_tokens_total").next().expect("c");
        assert_eq!(f.value_at(c, now + 1, std::slice::from_ref(&down)), None);
        // It comes back as a new process: its counters restart from zero.
        let after = f.value_at(c, now + 660_000, std::slice::from_ref(&down)).expect("back");
        assert!(after < f.value(c, now), "{after}");

        let xid = Incident {
            kind: IncidentKind::GpuXid,
            start_ms: now,
            end_ms: None,
            target: 2,
        };
        let x = (0..f.series.len())
            .find(|i| {
                let s = &f.series[*i];
                s.place.replica == 2 && s.place.gpu == Some(0) && s.role == Role::Xid
            })
            .expect("xid");
        assert_eq!(
            f.value_at(x, now + 1000, std::slice::from_ref(&xid)),
            Some(XID_FALLEN_OFF)
        );
        assert_eq!(f.value_at(x, now + XID_FALL_OFF_MS, std::slice::from_ref(&xid)), None);

        // A TTFT regression keeps every bucket cumulative and shifts mass up.
        let comp = f.series[replica_series(&f, 0, "vllm:time_to_first_token_seconds_count")
            .next()
            .expect("c")]
        .place
        .component as usize;
        let reg = [Incident {
            kind: IncidentKind::TtftRegression,
            start_ms: now,
            end_ms: None,
            target: comp,
        }];
        let mut buckets: Vec<usize> = replica_series(&f, 0, "vllm:time_to_first_token_seconds_bucket").collect();
        buckets.sort_by(|a, b| {
            let le = |i: &usize| f.series[*i].labels.get("le").parse::<f64>().unwrap_or(f64::INFINITY);
            le(a).total_cmp(&le(b))
        });
        let later = now + 3_600_000;
        let vals: Vec<f64> = buckets
            .iter()
            .map(|i| f.value_at(*i, later, &reg).expect("v"))
            .collect();
        assert!(vals.windows(2).all(|w| w[0] <= w[1]), "{vals:?}");
        let fast: Vec<f64> = buckets.iter().map(|i| f.value(*i, later)).collect();
        let grew = |v: &[f64], from: i64| v[5] - f.value_at(buckets[5], from, &reg).expect("v");
        assert!(
            grew(&vals, now) < grew(&fast, now),
            "fewer fast requests after the deploy"
        );

        // Zone skew: the target zone's token rate more than doubles.
        let skew = [Incident {
            kind: IncidentKind::ZoneSkew,
            start_ms: now,
            end_ms: None,
            target: f.series[c].place.zone as usize,
        }];
        let d_skew = f.value_at(c, now + 600_000, &skew).expect("v") - f.value_at(c, now, &skew).expect("v");
        let d_base = f.value(c, now + 600_000) - f.value(c, now);
        assert!(d_skew > 2.0 * d_base, "{d_skew} vs {d_base}");
    }

    #[test]
    fn schedules_parse_and_name_what_is_wrong() {
        let s = incident::parse_schedule("kv-cache-saturation@-30m:4, zone-skew@+10m/20m", 1_000_000_000).expect("ok");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].start_ms, 1_000_000_000 - 1_800_000);
        assert_eq!(s[0].target, 4);
        assert_eq!(s[1].end_ms, Some(1_000_000_000 + 1_800_000));
        let e = incident::parse_schedule("gpu-melts@1m", 0).expect_err("unknown");
        assert!(e.contains("gpu-melts") && e.contains("gpu-xid"), "{e}");
        assert!(incident::parse_schedule("zone-skew@soon", 0).is_err());
    }
}
