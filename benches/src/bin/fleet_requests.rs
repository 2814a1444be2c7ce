//! Pre-encodes the synthetic fleet's remote-write requests to files, and
//! replays them to any remote-write URL over keep-alive connections.
//!
//!   fleet_requests encode --dir DIR [--series 139520] [--hours 2]
//!   fleet_requests replay --dir DIR --url http://127.0.0.1:9090/api/v1/write [--connections 4]

use std::path::PathBuf;
use std::process::ExitCode;

use sextant_benches::{arg, requests, series_arg};

fn main() -> ExitCode {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let Some(dir) = arg("--dir").map(PathBuf::from) else {
        eprintln!("usage: fleet_requests encode|replay --dir DIR [...] (see the source's header)");
        return ExitCode::from(2);
    };
    match cmd.as_str() {
        "encode" => {
            let hours = arg("--hours").and_then(|s| s.parse().ok()).unwrap_or(2);
            match requests::encode(&dir, series_arg(139_520), hours) {
                Ok((m, fresh)) => {
                    println!(
                        "{} {} requests: {} series, {} samples, {} h from {} at {} ms",
                        if fresh { "encoded" } else { "already had" },
                        m.requests,
                        m.series,
                        m.samples,
                        m.hours,
                        m.t0,
                        m.interval_ms
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("encode: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "replay" => {
            let Some(url) = arg("--url") else {
                eprintln!("replay: --url is required");
                return ExitCode::from(2);
            };
            let connections = arg("--connections").and_then(|s| s.parse().ok()).unwrap_or(4);
            let (m, bodies) = match requests::load(&dir) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("replay: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let r = requests::replay(&url, &bodies, m.per_window, connections);
            println!(
                "sent {} of {} requests in {:.2} s over {connections} connections: {:.0} samples/s",
                r.requests,
                m.requests,
                r.secs,
                m.samples as f64 * r.requests as f64 / m.requests.max(1) as f64 / r.secs.max(1e-9)
            );
            match r.error {
                None => ExitCode::SUCCESS,
                Some(e) => {
                    eprintln!("replay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        other => {
            eprintln!("unknown command {other:?}: encode or replay");
            ExitCode::from(2)
        }
    }
}
