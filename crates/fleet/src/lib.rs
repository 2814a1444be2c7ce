//! A deterministic synthetic LLM inference fleet: vLLM-style histograms,
//! counters and gauges per replica, and DCGM-style gauges per GPU, with values
//! that behave like real ones (monotonic counters, consistent cumulative
//! histogram buckets, load following a daily curve). Shared by the benchmarks,
//! the demo and the peer-comparison harness.
//!
//! Everything is a pure function of the spec, the series and the timestamp, so
//! any sample can be regenerated without state.

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
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            endpoints: 4,
            components: 3,
            replicas: 2,
            gpus_per_replica: 2,
            seed: 42,
        }
    }
}

impl FleetSpec {
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
    /// Cumulative histogram bucket: observations at `rate`/s, fraction `cdf` below `le`.
    Bucket { rate: f64, cdf: f64 },
    /// Histogram `_sum`: observations at `rate`/s with mean `mean`.
    Sum { rate: f64, mean: f64 },
    /// Gauge oscillating around `base` by `amp`, integer-valued when `int`.
    Gauge { base: f64, amp: f64, int: bool },
}

/// One series of the fleet.
#[derive(Debug, Clone)]
pub struct SeriesSpec {
    pub labels: Labels,
    pub kind: Kind,
    /// Per-series phase and noise key.
    pub key: u64,
}

/// The fleet: its series, in a fixed order.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub spec: FleetSpec,
    pub series: Vec<SeriesSpec>,
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

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const MODELS: [&str; 6] = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "Qwen/Qwen2.5-14B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "google/gemma-2-9b-it",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
];

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

impl Fleet {
    pub fn new(spec: &FleetSpec) -> Fleet {
        let mut series = Vec::new();
        let mut key = spec.seed;
        let mut push = |labels: Labels, kind: Kind, series: &mut Vec<SeriesSpec>| {
            key = mix(key);
            series.push(SeriesSpec { labels, kind, key });
        };
        for e in 0..spec.endpoints {
            for c in 0..spec.components {
                let model = MODELS[(e * spec.components + c) % MODELS.len()];
                let traffic = 0.5 + unit(spec.seed ^ ((e * 131 + c) as u64)) * 1.5;
                let ttft_median = 0.05 + unit(spec.seed ^ ((e * 7 + c * 13) as u64)) * 0.3;
                for r in 0..spec.replicas {
                    let zone = ZONES[(e + c + r) % ZONES.len()];
                    let base = [
                        ("endpoint", format!("endpoint-{e:02}")),
                        ("inference_component", format!("ic-{e:02}-{c}")),
                        ("model_name", model.to_string()),
                        ("availability_zone", zone.to_string()),
                        ("instance", format!("10.{}.{}.{}:8000", e, c, r)),
                        ("engine", "0".to_string()),
                    ];
                    let ls = |name: &str, extra: &[(&str, String)]| {
                        let mut v: Vec<(String, String)> =
                            base.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                        v.push(("__name__".into(), name.into()));
                        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
                        Labels::from_pairs(v)
                    };
                    let rps = 2.0 * traffic;
                    let mut hist = |name: &str,
                                    bounds: &[f64],
                                    median: f64,
                                    sigma: f64,
                                    rate: f64,
                                    series: &mut Vec<SeriesSpec>| {
                        for b in bounds {
                            let cdf = lognormal_cdf(*b, median, sigma);
                            push(
                                ls(&format!("{name}_bucket"), &[("le", fmt_le(*b))]),
                                Kind::Bucket { rate, cdf },
                                series,
                            );
                        }
                        push(
                            ls(&format!("{name}_bucket"), &[("le", "+Inf".into())]),
                            Kind::Bucket { rate, cdf: 1.0 },
                            series,
                        );
                        push(
                            ls(&format!("{name}_count"), &[]),
                            Kind::Bucket { rate, cdf: 1.0 },
                            series,
                        );
                        push(
                            ls(&format!("{name}_sum"), &[]),
                            Kind::Sum {
                                rate,
                                mean: median * (sigma * sigma / 2.0).exp(),
                            },
                            series,
                        );
                    };
                    hist(
                        "vllm:time_to_first_token_seconds",
                        &TTFT_BUCKETS,
                        ttft_median,
                        0.8,
                        rps,
                        &mut series,
                    );
                    hist(
                        "vllm:inter_token_latency_seconds",
                        &ITL_BUCKETS,
                        0.03,
                        0.5,
                        rps * 200.0,
                        &mut series,
                    );
                    hist(
                        "vllm:e2e_request_latency_seconds",
                        &E2E_BUCKETS,
                        6.0,
                        0.7,
                        rps,
                        &mut series,
                    );
                    hist(
                        "vllm:request_queue_time_seconds",
                        &E2E_BUCKETS,
                        0.2,
                        1.2,
                        rps,
                        &mut series,
                    );
                    hist(
                        "vllm:request_prefill_time_seconds",
                        &E2E_BUCKETS,
                        0.15,
                        0.6,
                        rps,
                        &mut series,
                    );
                    hist(
                        "vllm:request_decode_time_seconds",
                        &E2E_BUCKETS,
                        5.5,
                        0.7,
                        rps,
                        &mut series,
                    );
                    hist(
                        "vllm:request_prompt_tokens",
                        &TOKEN_BUCKETS,
                        300.0,
                        1.0,
                        rps,
                        &mut series,
                    );
                    hist(
                        "vllm:request_generation_tokens",
                        &TOKEN_BUCKETS,
                        200.0,
                        0.9,
                        rps,
                        &mut series,
                    );
                    hist(
                        "vllm:iteration_tokens_total",
                        &TOKEN_BUCKETS,
                        40.0,
                        1.1,
                        rps * 20.0,
                        &mut series,
                    );
                    push(
                        ls("vllm:prompt_tokens_total", &[]),
                        Kind::Counter { rate: rps * 300.0 },
                        &mut series,
                    );
                    push(
                        ls("vllm:generation_tokens_total", &[]),
                        Kind::Counter { rate: rps * 200.0 },
                        &mut series,
                    );
                    for (reason, share) in [("stop", 0.9), ("length", 0.09), ("abort", 0.01)] {
                        push(
                            ls("vllm:request_success_total", &[("finished_reason", reason.into())]),
                            Kind::Counter { rate: rps * share },
                            &mut series,
                        );
                    }
                    push(
                        ls("vllm:num_preemptions_total", &[]),
                        Kind::Counter { rate: rps * 0.01 },
                        &mut series,
                    );
                    push(
                        ls("vllm:prefix_cache_queries_total", &[]),
                        Kind::Counter { rate: rps * 300.0 },
                        &mut series,
                    );
                    push(
                        ls("vllm:prefix_cache_hits_total", &[]),
                        Kind::Counter { rate: rps * 120.0 },
                        &mut series,
                    );
                    push(
                        ls("vllm:num_requests_running", &[]),
                        Kind::Gauge {
                            base: 8.0 * traffic,
                            amp: 4.0,
                            int: true,
                        },
                        &mut series,
                    );
                    push(
                        ls("vllm:num_requests_waiting", &[]),
                        Kind::Gauge {
                            base: 1.0,
                            amp: 1.0,
                            int: true,
                        },
                        &mut series,
                    );
                    push(
                        ls("vllm:kv_cache_usage_perc", &[]),
                        Kind::Gauge {
                            base: 0.5,
                            amp: 0.3,
                            int: false,
                        },
                        &mut series,
                    );
                    for g in 0..spec.gpus_per_replica {
                        let gl = |name: &str| {
                            let mut v: Vec<(String, String)> =
                                base.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                            v.push(("__name__".into(), name.into()));
                            v.push(("gpu".into(), g.to_string()));
                            v.push((
                                "UUID".into(),
                                format!("GPU-{:08x}-{e:02}{c}{r}{g}", mix(spec.seed ^ g as u64) as u32),
                            ));
                            v.push(("modelName".into(), "NVIDIA H100 80GB HBM3".into()));
                            v.push(("Hostname".into(), format!("node-{e:02}-{c}-{r}")));
                            Labels::from_pairs(v)
                        };
                        for (name, kind) in [
                            (
                                "DCGM_FI_DEV_GPU_UTIL",
                                Kind::Gauge {
                                    base: 70.0,
                                    amp: 25.0,
                                    int: true,
                                },
                            ),
                            (
                                "DCGM_FI_DEV_MEM_COPY_UTIL",
                                Kind::Gauge {
                                    base: 40.0,
                                    amp: 20.0,
                                    int: true,
                                },
                            ),
                            (
                                "DCGM_FI_DEV_FB_USED",
                                Kind::Gauge {
                                    base: 60_000.0,
                                    amp: 10_000.0,
                                    int: true,
                                },
                            ),
                            (
                                "DCGM_FI_DEV_FB_FREE",
                                Kind::Gauge {
                                    base: 20_000.0,
                                    amp: 10_000.0,
                                    int: true,
                                },
                            ),
                            (
                                "DCGM_FI_DEV_POWER_USAGE",
                                Kind::Gauge {
                                    base: 450.0,
                                    amp: 150.0,
                                    int: false,
                                },
                            ),
                            (
                                "DCGM_FI_DEV_GPU_TEMP",
                                Kind::Gauge {
                                    base: 62.0,
                                    amp: 8.0,
                                    int: true,
                                },
                            ),
                            (
                                "DCGM_FI_DEV_SM_CLOCK",
                                Kind::Gauge {
                                    base: 1755.0,
                                    amp: 200.0,
                                    int: true,
                                },
                            ),
                            (
                                "DCGM_FI_DEV_XID_ERRORS",
                                Kind::Gauge {
                                    base: 0.0,
                                    amp: 0.0,
                                    int: true,
                                },
                            ),
                            (
                                "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
                                Kind::Gauge {
                                    base: 0.7,
                                    amp: 0.25,
                                    int: false,
                                },
                            ),
                            (
                                "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
                                Kind::Gauge {
                                    base: 0.45,
                                    amp: 0.2,
                                    int: false,
                                },
                            ),
                            (
                                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                                Kind::Counter { rate: 450_000.0 },
                            ),
                        ] {
                            push(gl(name), kind, &mut series);
                        }
                    }
                }
            }
        }
        Fleet {
            spec: spec.clone(),
            series,
        }
    }

    /// The value of series `i` at time `t` (ms).
    pub fn value(&self, i: usize, t_ms: i64) -> f64 {
        let s = &self.series[i];
        let phase = (s.key % 1000) as f64 / 20_000.0;
        match s.kind {
            Kind::Counter { rate } => (rate * load_integral(t_ms, phase)).floor().max(0.0),
            Kind::Bucket { rate, cdf } => (rate * cdf * load_integral(t_ms, phase)).floor().max(0.0),
            Kind::Sum { rate, mean } => {
                // Sums are floats: rounded to microseconds as exporters often do.
                ((rate * mean * load_integral(t_ms, phase)) * 1e6).round() / 1e6
            }
            Kind::Gauge { base, amp, int } => {
                let noise = unit(s.key ^ (t_ms as u64 / 1000)) * 2.0 - 1.0;
                let v = base + amp * (0.6 * (load(t_ms, phase) * 2.0 - 1.2) + 0.4 * noise);
                if int {
                    v.round().max(0.0)
                } else {
                    (v * 1e4).round() / 1e4
                }
            }
        }
    }

    /// Samples of every series at `t` (ms), as `(series index, sample)`.
    pub fn scrape(&self, t_ms: i64) -> impl Iterator<Item = (usize, Sample)> + '_ {
        (0..self.series.len()).map(move |i| (i, Sample::new(t_ms, self.value(i, t_ms))))
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
        }
    }

    #[test]
    fn sizing_hits_the_requested_order_of_magnitude() {
        let n = Fleet::new(&FleetSpec::with_series(100_000)).series.len();
        assert!((100_000..140_000).contains(&n), "{n}");
    }
}
