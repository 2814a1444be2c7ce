//! The `sextant` binary.

use clap::Parser;
use sextant::config::{Cli, Command, DemoCommand, ServeArgs};

fn init_logging(level: Option<String>) {
    let filter = level
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        // Colours only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Query evaluation frees the label sets and buffers of many series at once,
/// which glibc's allocator handles slowly (see `sextant::memory`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    sextant::memory::tune();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => *a,
        Some(Command::Demo(d)) => {
            init_logging(None);
            return run_demo(d);
        }
        None => ServeArgs::default(),
    }
    .merged()?;
    init_logging(args.log_level.clone());
    let opts = args.resolve()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sextant")
        .build()?;
    // The server runs as a task on the worker threads, not on this one: a
    // connection it accepts then starts on the thread that accepted it,
    // which is awake, instead of waking a worker.
    rt.block_on(async move {
        tokio::spawn(sextant::serve(opts))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the server's task failed: {e}")))
    })
}

/// `sextant demo`: sends the fleet to a remote-write URL until interrupted.
fn run_demo(d: DemoCommand) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let settings = d.demo.resolve()?;
    let now = sextant_fleet::demo::now_ms();
    let schedule = sextant_fleet::incident::parse_schedule(&settings.schedule, now).map_err(|e| anyhow::anyhow!(e))?;
    let cfg = sextant_fleet::demo::DemoConfig {
        url: d.url.clone(),
        spec: sextant_fleet::FleetSpec {
            seed: settings.seed,
            ..sextant_fleet::FleetSpec::demo(settings.series)
        },
        backfill_ms: settings.backfill_ms,
        interval_ms: settings.interval_ms,
        connections: d.connections,
        ..Default::default()
    };
    let demo = sextant_fleet::demo::Demo::start(cfg, schedule).map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(series = demo.fleet.series.len(), url = %d.url, "demo fleet sending");
    for x in demo.incidents() {
        tracing::info!("incident scheduled: {} ({})", demo.fleet.describe(&x), x.kind.name());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stop = rt.block_on(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        let mut was_backfilled = false;
        loop {
            tokio::select! {
                _ = sextant::shutdown_signal() => return true,
                _ = tick.tick() => {}
            }
            let s = &demo.stats;
            let backfilled = demo.backfilled();
            tracing::info!(
                samples = s.samples.load(Ordering::Relaxed),
                requests = s.requests.load(Ordering::Relaxed),
                failed = s.failed_requests.load(Ordering::Relaxed),
                backfilled,
                "demo progress"
            );
            if let Some(e) = s.last_error.read().ok().and_then(|g| g.clone()) {
                tracing::warn!("last error from {}: {e}", d.url);
            }
            if backfilled && !was_backfilled && d.backfill_only {
                return false;
            }
            was_backfilled = backfilled;
        }
    });
    let failed = demo.stats.failed_requests.load(Ordering::Relaxed);
    let sent = demo.stats.samples.load(Ordering::Relaxed);
    demo.stop();
    tracing::info!(
        samples = sent,
        failed_requests = failed,
        interrupted = stop,
        "demo stopped"
    );
    if failed > 0 {
        anyhow::bail!("{failed} requests were not accepted");
    }
    Ok(())
}
